#!/usr/bin/env bash
# compress-old-logs.sh: free space on a filling filesystem by compressing rotated logs and
# deleting old compressed ones. The exec target of the aiops policy `compress-old-logs`
# (see topology.yaml); runbook: runbooks/disk-usage-high.md.
#
# Safe by default: without --execute it only lists what it would do. It never builds a shell
# command from its input: every path is validated, then passed to find/gzip/rm as one argument.
set -euo pipefail
IFS=$'\n\t'
export LC_ALL=C

PROG=${0##*/}
usage() {
  cat <<USAGE
Usage: $PROG [--dry-run | --execute] [--host NAME] [--log-dir DIR]
       ${PROG//?/ } [--min-age-days N] [--delete-after-days N] MOUNTPOINT

Compress rotated, uncompressed logs (app.log.1, app.log-20240101, syslog.2, *.old) older than
--min-age-days, and delete compressed rotated logs (*.gz, *.xz, *.zst, *.bz2) older than
--delete-after-days, under the log directory of MOUNTPOINT, without leaving that filesystem.
Live logs (*.log and other names without a rotation suffix) are never touched.

  MOUNTPOINT             the filesystem to free, e.g. / or /var/log (the incident's mountpoint label)
  --dry-run              list what would be done, change nothing (the default)
  --execute              do it
  --host NAME            the host the incident named; only logged, the script acts on this machine
  --log-dir DIR          where the logs are (default: /var/log for /, else MOUNTPOINT itself);
                         must be on MOUNTPOINT's filesystem
  --min-age-days N       compress rotated logs last modified more than N days ago (default 1)
  --delete-after-days N  delete compressed rotated logs older than N days (default 30; 0: never delete)

Exit status: 0 done (or nothing to do), 2 bad arguments, 3 a precondition failed,
4 another run holds the lock, 1 an operation failed.
USAGE
}

die() { echo "$PROG: $2" >&2; exit "$1"; }

# A path we accept: absolute, no '..' component, only characters that need no quoting anywhere.
valid_path() {
  [[ $1 =~ ^/[A-Za-z0-9._/-]*$ ]] || return 1
  [[ /$1/ != */../* ]] || return 1
}
valid_count() { [[ $1 =~ ^[0-9]{1,4}$ ]]; }

mode=dry-run host="" log_dir="" min_age=1 delete_after=30 mount=""
while (($#)); do
  case $1 in
    --dry-run) mode=dry-run ;;
    --execute) mode=execute ;;
    --host) (($# >= 2)) || die 2 "--host needs a value"; host=$2; shift ;;
    --log-dir) (($# >= 2)) || die 2 "--log-dir needs a value"; log_dir=$2; shift ;;
    --min-age-days) (($# >= 2)) || die 2 "--min-age-days needs a value"; min_age=$2; shift ;;
    --delete-after-days) (($# >= 2)) || die 2 "--delete-after-days needs a value"; delete_after=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) die 2 "unknown option '$1' (see --help)" ;;
    *) [[ -z $mount ]] || die 2 "one MOUNTPOINT only (got '$mount' and '$1')"; mount=$1 ;;
  esac
  shift
done
if (($#)); then
  [[ -z $mount && $# -eq 1 ]] || die 2 "one MOUNTPOINT only"
  mount=$1
fi

[[ -n $mount ]] || { usage >&2; exit 2; }
valid_path "$mount" || die 2 "MOUNTPOINT must be an absolute path of [A-Za-z0-9._/-] without '..' (got '$mount')"
[[ -z $host || $host =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$ ]] || die 2 "--host must be a host name (got '$host')"
valid_count "$min_age" && ((min_age >= 1)) || die 2 "--min-age-days must be a whole number from 1 (got '$min_age')"
valid_count "$delete_after" || die 2 "--delete-after-days must be a whole number, 0 to never delete (got '$delete_after')"
((delete_after == 0 || delete_after > min_age)) ||
  die 2 "--delete-after-days ($delete_after) must be greater than --min-age-days ($min_age)"

mount=${mount%/}; mount=${mount:-/}
if [[ -z $log_dir ]]; then
  if [[ $mount == / ]]; then log_dir=/var/log; else log_dir=$mount; fi
fi
valid_path "$log_dir" || die 2 "--log-dir must be an absolute path of [A-Za-z0-9._/-] without '..' (got '$log_dir')"
log_dir=${log_dir%/}
[[ -n $log_dir ]] || die 2 "--log-dir cannot be /"
[[ -d $mount ]] || die 3 "MOUNTPOINT $mount is not a directory"
[[ -d $log_dir ]] || die 3 "log directory $log_dir does not exist"
[[ $mount == / || $log_dir == "$mount" || $log_dir == "$mount"/* ]] || die 3 "log directory $log_dir is not under $mount"
[[ $(stat -c %d -- "$log_dir") == "$(stat -c %d -- "$mount")" ]] ||
  die 3 "log directory $log_dir is on another filesystem than $mount: cleaning it frees nothing on $mount"

if command -v flock >/dev/null; then
  lock=${TMPDIR:-/tmp}/compress-old-logs.lock
  exec 9>>"$lock"
  flock -n 9 || die 4 "another run holds $lock"
fi

usage_pct() { df -P -- "$mount" | awk 'NR == 2 { sub("%", "", $5); print $5 }'; }
echo "$PROG: $mode on ${host:-$(hostname)}: $mount at $(usage_pct)% used; logs in $log_dir;" \
     "compress rotated logs older than ${min_age}d; delete archives older than ${delete_after}d (0: never)"

compressed=0 deleted=0 freed=0 failed=0

# Rotated but uncompressed: a rotation suffix (.1, .log.3, .log-20240101, -20240101, .old), not compressed yet.
while IFS= read -r -d '' f; do
  size=$(stat -c %s -- "$f")
  if command -v fuser >/dev/null && fuser -s -- "$f" 2>/dev/null; then
    echo "skip (open by a process): $f"; continue
  fi
  if [[ $mode == dry-run ]]; then
    echo "would compress: $f ($size bytes)"
  elif gzip -9 -- "$f"; then
    echo "compressed: $f ($size bytes)"
    freed=$((freed + size - $(stat -c %s -- "$f.gz")))
  else
    echo "FAILED to compress: $f" >&2; failed=$((failed + 1)); continue
  fi
  compressed=$((compressed + 1))
done < <(find "$log_dir" -xdev -type f -mmin +$((min_age * 1440)) \
           \( -name '*.[0-9]' -o -name '*.[0-9][0-9]' -o -name '*.log.[0-9]*' -o -name '*.log-[0-9]*' \
              -o -name '*-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]' -o -name '*.old' \) \
           ! \( -name '*.gz' -o -name '*.xz' -o -name '*.zst' -o -name '*.bz2' -o -name '*.lz4' -o -name '*.zip' \) \
           -print0 | sort -z)

if ((delete_after > 0)); then
  while IFS= read -r -d '' f; do
    size=$(stat -c %s -- "$f")
    if [[ $mode == dry-run ]]; then
      echo "would delete: $f ($size bytes)"
    elif rm -f -- "$f"; then
      echo "deleted: $f ($size bytes)"; freed=$((freed + size))
    else
      echo "FAILED to delete: $f" >&2; failed=$((failed + 1)); continue
    fi
    deleted=$((deleted + 1))
  done < <(find "$log_dir" -xdev -type f -mmin +$((delete_after * 1440)) \
             \( -name '*.gz' -o -name '*.xz' -o -name '*.zst' -o -name '*.bz2' -o -name '*.lz4' \) -print0 | sort -z)
fi

if [[ $mode == dry-run ]]; then
  echo "$PROG: dry run: would compress $compressed and delete $deleted files; run with --execute to do it"
else
  echo "$PROG: compressed $compressed, deleted $deleted, freed $freed bytes; $mount now at $(usage_pct)% used"
fi
((failed == 0)) || die 1 "$failed operations failed"
