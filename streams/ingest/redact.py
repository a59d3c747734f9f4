"""PII redaction at ingest: every string that leaves the decoders goes through a :class:`Redactor`.

What is replaced, and by what (the built-in rules, chosen by ``ingest.redaction.rules``):

- ``email``: addresses (``jane.doe@example.com``) become ``<email>``;
- ``pan``: card numbers, 13 to 19 digits, optionally in groups split by one space or dash,
  that pass the Luhn check, become ``<pan>``. A number that fails Luhn (most order ids and
  timestamps: nine in ten) stays. Inside a longer grouped run (``4111 1111 1111 1111 2026``) every
  group-aligned stretch is checked too; one unbroken run longer than 19 digits is left alone;
- ``token``: credentials become ``<token>``: the value after ``Bearer``, after an
  ``Authorization:`` header, after a secret-looking key (``api_key=``, ``apikey:``, ``token=``,
  ``secret=``, ``password=``, ``"access_token": "..."``, ...), and well-known key shapes wherever
  they stand: Stripe ``sk_live_...``, GitHub ``ghp_...``/``github_pat_...``, Slack ``xoxb-...``,
  AWS ``AKIA...``/``ASIA...``, Google ``AIza...``, GitLab ``glpat-...``, JWTs ``eyJ...``. A series
  label or log attribute whose *key* looks secret (``api_key``, ``x.auth_token``,
  ``http.request.header.authorization``) has its whole value replaced;
- ``ip`` (off by default): IPv4 and IPv6 addresses become ``<ip>``.

Operators add their own regular expressions (``ingest.redaction.custom``); they run after the
built-in rules, and their matches become the rule's replacement (``<name>`` by default).

The decoders call :meth:`Redactor.labels` for series labels and log attributes (keys and
values), :meth:`Redactor.text` for metric names, and :meth:`Redactor.prefix` for log bodies.
Service names are not redacted: they route and group everything downstream, and the pipeline
accepts only the services ``topology.yaml`` declares (an unknown one is dropped, and the reason,
which quotes it, is redacted on its way to the dead-letter topic).

Text often carries JSON inside a string (a kvlist attribute rendered as a label, an application
that logs JSON as its body), so an escaped quote (``\\"api_key\\": ...``) or an escaped newline
before a word (``\\nBearer ...``) does not hide a match. Known gaps: an address whose local part
is only dots and quotes is not recognised, and a credential longer than ``PREFIX_MARGIN``
characters that straddles the cut of a log body or excerpt may keep the part before the cut.

This module is pure: no I/O, no clock. The caches only remember answers, so a redactor gives the
same output for the same input whatever it saw before.

Examples
--------
>>> r = Redactor()
>>> r.text("login failed for jane.doe@example.com card 4111 1111 1111 1111 order 4111111111111112")
'login failed for <email> card <pan> order 4111111111111112'
>>> r.text("GET /v1/pay Authorization: Bearer abc.def-123 api_key=s3cr3t&x=1")
'GET /v1/pay Authorization: <token> api_key=<token>&x=1'
>>> r.labels((("api_key", "k-12345"), ("user", "bob@example.org")))
(('api_key', '<token>'), ('user', '<email>'))
>>> Redactor(["ip"]).text("from 10.0.0.7:443 and [fe80::1%eth0]")
'from <ip>:443 and [<ip>]'
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache

BUILTIN_RULES = ("email", "pan", "token", "ip")
DEFAULT_RULES = ("email", "pan", "token")
PLACEHOLDERS = {"email": "<email>", "pan": "<pan>", "token": "<token>", "ip": "<ip>"}
TOKEN = PLACEHOLDERS["token"]

# A match that straddles a cut (log body, dead-letter excerpt) is still found whole: the window
# redacted runs this far past the cut. Longer than any address or card number.
PREFIX_MARGIN = 512

# --- the built-in rules ------------------------------------------------------------------------
# One pattern per rule, applied in order (token, email, pan, ip), each behind a cheap test of
# what any match must contain: a regex scan costs about a microsecond per log line, a substring
# test some tens of nanoseconds, and most strings contain nothing. The token alternatives are
# named groups; the callback reads ``m.lastgroup`` (the outer group closes last). Lookbehinds keep
# the scans linear: a match can only start where a run of its characters starts.

_SECRET_WORDS = (r"(?:aws[_-]?)?secret[_-]?access[_-]?key|session[_-]?token"
                 r"|api[_-]?key|apikey|x-api-key|access[_-]?key|secret[_-]?key|private[_-]?key|access[_-]?token"
                 r"|auth[_-]?token|refresh[_-]?token|id[_-]?token|client[_-]?secret|token|secret|password|passwd|pwd")
# A word starts after a non-alphanumeric, or after an escaped control character: a JSON
# document inside a string (a kvlist rendered as a label, an app logging JSON as its body) writes
# a newline as backslash-n, which must not glue the "n" to the next word.
_START = r"(?:(?<![A-Za-z0-9])|(?<=\\[nrtbf]))"
_QUOTE = r"(?:\\?[\"'])?"  # a quote, perhaps escaped inside JSON text
# The value after a secret-looking key: a quoted string whole (up to 200 characters, so one
# keyword costs a bounded scan whatever follows it: "password='correct horse battery'"), in
# JSON-escaped quotes, double or single quotes; else one bare word, perhaps after a lone quote.
_KV_VALUE = (r"(?P<kv_val>\\\"(?:[^\\\r\n]|\\(?!\")){1,200}\\\""
             r'|"(?:[^"\\\r\n]|\\.){1,200}"'
             r"|'[^'\r\n]{1,200}'"
             rf"|{_QUOTE}[^\s\"'&,;\\]+)")
_TOKEN_PARTS = (
    # Authorization: <scheme> <credential>  (the scheme goes too: "Basic dXNlcjpwdw==")
    rf"(?P<auth>(?P<auth_head>(?i:{_START}(?:proxy-)?authorization){_QUOTE}\s*[:=]\s*{_QUOTE})"
    r"(?:(?i:bearer|basic|digest|token|negotiate|apikey)\s+)?[^\s\"',;\\]+)",
    rf"(?P<bearer>(?P<bearer_head>(?i:{_START}bearer)\s+)[A-Za-z0-9._~+/-]+=*)",
    rf"(?P<kv>(?P<kv_head>(?i:{_START}(?:{_SECRET_WORDS})){_QUOTE}\s*[:=]\s*){_KV_VALUE})",
    # A JWT's characters include "-" and "_", so it starts only where a run of them starts: a
    # scan per "eyJ" inside one long run would be quadratic.
    rf"(?P<shape>(?:{_START}(?:[spr]k_(?:live|test)_[0-9A-Za-z]{{8,}}|whsec_[0-9A-Za-z]{{16,}}"
    r"|gh[pousr]_[0-9A-Za-z]{30,}|github_pat_[0-9A-Za-z_]{30,}|xox[abposr]-[0-9A-Za-z-]{10,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}|glpat-[0-9A-Za-z_-]{20,})"
    r"|(?:(?<![0-9A-Za-z_-])|(?<=\\[nrtbf]))eyJ[0-9A-Za-z_-]{8,}\.[0-9A-Za-z_-]{8,}(?:\.[0-9A-Za-z_-]*)?)"
    r"(?![0-9A-Za-z]))",
    # The password of a URL's user info: postgres://admin:<token>@db, https://u:<token>@host
    r"(?P<url>(?P<url_head>(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/?#@\"'<>\\]{0,256}:)"
    r"[^\s/?#\"'<>\\]{1,256}(?=@))",
)
_LOCAL = r"[\w.!#$%&'*+/=?^`{|}~-]"
_FIRST = r"[\w!#$%&*+/=?^{|}~-]"  # not a dot or a quote: "'jane@example.com'" keeps its quotes
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
# An address starts only where a run of the characters of its local part starts (the dots and
# quotes that lead the run stay): one scan per run, where a scan per dot was quadratic on
# "a.a.a.a...@".
_EMAIL = (rf"(?<!{_LOCAL})(?P<email_lead>[.'`]*)"
          rf"(?P<email>{_FIRST}{_LOCAL}*@(?:{_LABEL}\.)+[^\W\d_](?:[\w-]{{0,61}}[^\W_])?(?![\w-]))")
# A maximal run of digits with at most one space or dash between them, 13 digits or more. The
# first digit comes before the lookbehinds so that the scan can skip to digits quickly. Or card
# grouping by dots: three to six groups of 3 to 6 digits ("4111.1111.1111.1111"); a decimal
# number or a version has fewer or other groups.
_PAN = (r"(?P<pan_dot>(?<![0-9.])[0-9]{3,6}(?:\.[0-9]{3,6}){2,5}(?![0-9]|\.[0-9]))"
        r"|(?P<pan>[0-9](?<![0-9]{2})(?<![0-9][ -][0-9])(?:[ -]?[0-9]){12,})")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IP = (rf"(?P<ip4>(?:(?<![\w.])|(?<=\\[nrtbf])){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.[0-9]))",
       # candidates only; the callback keeps what ipaddress does not accept (times, MAC addresses)
       r"(?P<ip6>(?:(?<![\w:.])|(?<=\\[nrtbf]))(?=[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:.]{2,}(?:%[0-9A-Za-z_.-]+)?(?![\w:]))")

_RUN_SEP = re.compile(r"([ -])")
_DOUBLED = tuple((2 * d) - 9 if d > 4 else 2 * d for d in range(10))


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of ASCII digits.

    >>> luhn_valid("4111111111111111"), luhn_valid("4111111111111112")
    (True, False)
    """
    total = 0
    double = False
    for c in reversed(digits):
        d = ord(c) - 48
        total += _DOUBLED[d] if double else d
        double = not double
    return total % 10 == 0


def _redact_pan(run: str) -> str:
    """A digit run found by the ``pan`` rule: whole, or its group-aligned card numbers, redacted."""
    digits = run.replace(" ", "").replace("-", "")
    if len(digits) <= 19 and luhn_valid(digits):
        return PLACEHOLDERS["pan"]
    parts = _RUN_SEP.split(run)  # [group, sep, group, sep, ..., group]
    groups = parts[0::2]
    if len(groups) == 1:
        return run  # one unbroken run: an id, not a card written out
    n = len(groups)
    out: list[str] = []
    done = 0  # groups[:done] are already in out
    i = 0
    while i < n:
        best = -1
        total = 0
        for j in range(i, n):
            total += len(groups[j])
            if total > 19:
                break
            if total >= 13 and luhn_valid("".join(groups[i:j + 1])):
                best = j  # the longest card-number stretch starting at group i
        if best < 0:
            i += 1
            continue
        out.append("".join(parts[2 * done:2 * i]))  # untouched groups and the separator before i
        out.append(PLACEHOLDERS["pan"])
        done = i = best + 1
        if done < n:
            out.append(parts[2 * done - 1])
    out.append("".join(parts[2 * done:]))
    return "".join(out)


def _redact_ip6(candidate: str) -> str:
    core = candidate.rstrip(".")
    try:
        ipaddress.IPv6Address(core)
    except ValueError:
        return candidate
    return PLACEHOLDERS["ip"] + candidate[len(core):]


def _replace_token(m: re.Match) -> str:
    kind = m.lastgroup
    if kind == "shape":
        return TOKEN
    if kind == "kv":  # the value's quotes stay: '"password": "<token>"'
        value = m.group("kv_val")
        quote = value[:2] if value[:1] == "\\" else value[:1] if value[:1] in "\"'" else ""
        closed = quote and len(value) > 2 * len(quote) and value.endswith(quote)
        return m.group("kv_head") + quote + TOKEN + (quote if closed else "")
    return m.group(f"{kind}_head") + TOKEN  # auth, bearer, url: the key (user, host) stays readable


def _replace_pan(m: re.Match) -> str:
    if m.lastgroup == "pan_dot":
        digits = m.group().replace(".", "")
        return PLACEHOLDERS["pan"] if 13 <= len(digits) <= 19 and luhn_valid(digits) else m.group()
    return _redact_pan(m.group())


def _replace_ip(m: re.Match) -> str:
    return PLACEHOLDERS["ip"] if m.lastgroup == "ip4" else _redact_ip6(m.group())


_TOKEN_RX: dict[int, re.Pattern] = {}  # alternation of the token parts whose gates passed, by bit mask
_TOKEN_MASK: dict[re.Pattern, int] = {}  # and back

# Second gates, tighter than the word tests, for the alternatives that cost the most to scan
# for (the secret-key one alone is ~25 us on a 300-character log line, and the word tests let
# "key" or "ia" through in most lines). Each is a necessary condition: the literal start of every
# branch, or the key word with what must follow it, without the lookarounds that make the scan
# slow. An alternative that cannot match anywhere in the string changes nothing when it leaves
# the alternation (``sub`` scans the original string, whichever alternatives it holds), so the
# output is the same. ``tests/property/test_redaction_gates.py`` holds it to the ungated pass.
# The shape tokens are case-sensitive, so their leads are looked for in the string itself, as
# substrings (a regex alternation of them costs several microseconds: it starts at every letter).
# A one-character test first where a lead has a rare letter: it is a memchr, the longer tests
# are not, and most lines have no "A", "J" or "_". (A word test before these, as the other
# alternatives have, once let a GitHub fine-grained token through: "github_pat_" holds none of
# the words, so it was redacted only when "gh" or "ia" stood elsewhere in the line.)
_GITHUB = re.compile(r"gh[pousr]_")


def _shape_lead(s: str) -> bool:
    """A lead of a shape token in ``s``."""
    if ("A" in s and ("AKIA" in s or "ASIA" in s or "AIza" in s) or "J" in s and "eyJ" in s or "xox" in s
            or "glpat-" in s):
        return True
    if "_" not in s:
        return False
    return ("k_live_" in s or "k_test_" in s or "whsec_" in s or "github_pat_" in s
            or _GITHUB.search(s) is not None)


# The others are case-insensitive; searched in the lowercased string, and only for ASCII
# strings, where ``(?i)`` means exactly "equal once lowercased" (``re`` also folds "ſ" to "s"
# and "ı" to "i", which ``str.lower`` does not). Bits: 1 auth, 2 bearer, 4 kv (_TOKEN_PARTS).
# The bearer gate: its word and a space after it.
_BEARER = re.compile(r"bearer\s")
# The auth and kv gates, ``authorization(?:\\?["'])?\s*[:=]`` and
# ``(?:key|token|secret|passw(?:or)?d|pwd)(?:\\?["'])?\s*[:=]``, written backwards, to search the
# reversed string: there they start with their separator, one literal character, which ``re``
# skips to as fast as ``find`` does, where forwards they start at every "k", "t", "s" or "p" of
# the line (3 us on the bench's lines, against 0.3 us for the reversal and these). A match of the
# reversed pattern in the reversed string is a match of the pattern in the string, read backwards.
# A match consumes no separator but its first, so ``findall`` tries each one; group 1 is the auth
# gate's (no kv word ends in "authorization", so at one separator only one of the two can match).
_KEYED_REV = tuple(re.compile(sep + r"\s*(?:[\"']\\?)?(?:(noitazirohtua)|yek|nekot|terces|d(?:ro)?wssap|dwp)")
                   for sep in (":", "="))


def _token_pattern(s: str) -> re.Pattern | None:
    """The token alternatives that can match ``s``, or ``None``. Each alternative needs one of
    its words (in any case): testing for them is much cheaper than scanning for the pattern. The
    costly ones then pass a second, tighter gate (:func:`_shape_lead`, ``_BEARER``, ``_KEYED_REV``).
    For an ASCII string the tighter gates alone decide (each implies its word test: "authorization"
    holds "auth", every key word of ``_KEYED_REV`` one of the kv words)."""
    low = s.lower()
    if s.isascii():
        mask = 2 if "bearer" in low and _BEARER.search(low) is not None else 0
        if ":" in s or "=" in s:
            rev = low[::-1]
            for rx in _KEYED_REV:
                for auth in rx.findall(rev):
                    mask |= 1 if auth else 4
    else:
        mask = 0
        if "auth" in low:
            mask = 1
        if "bearer" in low:
            mask |= 2
        if "key" in low or "token" in low or "sec" in low or "pass" in low or "pwd" in low:
            mask |= 4
    if _shape_lead(s):
        mask |= 8
    if "://" in s:
        mask |= 16
    if not mask:
        return None
    rx = _TOKEN_RX.get(mask)
    if rx is None:
        rx = _TOKEN_RX[mask] = re.compile("|".join(p for i, p in enumerate(_TOKEN_PARTS) if mask >> i & 1))
        _TOKEN_MASK[rx] = mask
    return rx


# Where the scan for a rule's matches can start. ``re`` tries every position of the string, and
# the token alternation costs some 100 ns a position (it starts with lookbehinds, so nothing lets
# ``re`` skip ahead): ~28 us on a 300-character line that ends in "Bearer eyJ...". No match of an
# alternative starts before the first place its literal part can stand, found by ``find`` in a
# fraction of that; matching from there finds the same matches (lookbehinds still see the text
# before), so the output is the same. For ASCII strings only, where ``s.lower()`` keeps positions.
# Each shape lead holds one of these this far from its start ("eyJ", "github_pat_"): the first of
# them bounds where a lead can start, found by memchr for one character, where a search for each
# lead costs about 0.3 us ("xox" is searched whole: "x" is in many words).
_SHAPE_CHARS = (("A", 0), ("J", 2), ("xox", 0), ("-", 5), ("_", 6))
_KV_WORDS = ("key", "token", "secret", "passw", "pwd")  # what every _SECRET_WORDS alternative ends in...
_KV_REACH = len("aws_secret_access_")  # ...this far at most from its start


def _token_start(s: str, rx: re.Pattern) -> int:
    """No match of ``rx`` (an alternation from :func:`_token_pattern` for ``s``) starts before this.
    (Each bit of the mask is set only when the word its gate found is in ``s``: ``find`` gives >= 0.)"""
    mask = _TOKEN_MASK.get(rx)
    if mask is None or not s.isascii():
        return 0
    low = s.lower()
    start = len(s)
    if mask & 1:  # at "authorization", or at "proxy-" before it
        start = max(0, low.find("authorization") - len("proxy-"))
    if mask & 2:
        start = min(start, low.find("bearer"))
    if mask & 4:
        start = min(start, max(0, min(i for i in map(low.find, _KV_WORDS) if i >= 0) - _KV_REACH))
    if mask & 8:
        for c, offset in _SHAPE_CHARS:
            i = s.find(c)
            if i >= 0:
                start = min(start, max(0, i - offset))
    if mask & 16:  # a scheme is 31 characters at most
        start = min(start, max(0, s.find("://") - 31))
    return start


def _email_start(s: str) -> int:
    """No address starts before the run of non-spaces that holds the first "@": an address holds
    an "@", and its local part, which runs from its start to its first "@", holds no space."""
    return s.rfind(" ", 0, s.find("@")) + 1


# Digits to "0", every other byte to "x"; spaces, dashes and dots are deleted.
_DIGIT_MAP = bytes(0x30 if 0x30 <= c <= 0x39 else 0x78 for c in range(256))
_THIRTEEN = b"0" * 13
_PAN_RX = re.compile(_PAN)


def _pan_pattern(s: str) -> re.Pattern | None:
    """``None`` when ``s`` has no 13 ASCII digits in a row once spaces and dashes are removed:
    then no run the ``pan`` rule looks at is long enough. (UTF-8 encodes ASCII digits, and only
    them, as bytes 0x30..0x39.) Ids full of short digit groups, such as UUIDs, stop here."""
    b = s.encode("utf-8", "surrogatepass").translate(_DIGIT_MAP, b" -.")
    return _PAN_RX if _THIRTEEN in b else None


_EMAIL_RX = re.compile(_EMAIL)


def _email_pattern(s: str) -> re.Pattern | None:
    return _EMAIL_RX if "@" in s else None


_IP_RX = re.compile("|".join(_IP))


def _ip_pattern(s: str) -> re.Pattern | None:
    return _IP_RX if "." in s or ":" in s else None


def compile_builtin(rules: Iterable[str]) -> tuple[tuple, ...]:
    """``(select, replacement)`` for each chosen built-in rule, in the order they run;
    ``select(s)`` is the pattern to run on ``s``, or ``None`` when a cheap test shows that
    nothing in ``s`` can match.

    Tokens run first: "password=jane@example.com" is a credential, then no longer an address.

    Raises
    ------
    ValueError
        For a name that is not a built-in rule.
    """
    chosen = set(rules)
    unknown = chosen - set(BUILTIN_RULES)
    if unknown:
        raise ValueError(f"unknown redaction rule {sorted(unknown)[0]!r} (expected one of {', '.join(BUILTIN_RULES)})")
    table = {"token": (_token_pattern, _replace_token), "email": (_email_pattern, r"\g<email_lead><email>"),
             "pan": (_pan_pattern, _replace_pan), "ip": (_ip_pattern, _replace_ip)}
    return tuple(entry for name, entry in table.items() if name in chosen)


_SECRET_KEY = re.compile(rf"(?i)(?:^|[._-])(?:{_SECRET_WORDS}|authorization|proxy-authorization|cookie|set-cookie)$")


def _re2_options():
    import re2

    opts = re2.Options()
    opts.log_errors = False  # the reason is returned, not written to stderr
    return opts


def _compile_linear(pattern: str):
    """``pattern`` compiled by RE2 (the ``google-re2`` package), whose matching time is linear
    in the input whatever the pattern. Raises ``re2.error`` for what RE2 cannot run that way:
    backreferences, lookahead and lookbehind."""
    import re2

    return re2.compile(pattern, _re2_options())


def check_custom_pattern(pattern: str) -> str | None:
    """Why an operator's pattern cannot be used, or ``None``.

    Custom rules run on RE2, a linear-time engine: ``(a+)+$`` costs what ``a+$`` costs, and
    what RE2 cannot run in linear time (backreferences, lookaround) is refused here, so
    at config validation, with the reason.

    >>> check_custom_pattern("EMP-[0-9]{6}") is None
    True
    >>> check_custom_pattern("EMP-(")
    'invalid regular expression: missing ), unterminated subpattern at position 4'
    >>> check_custom_pattern("x*")
    'the pattern matches the empty string'
    >>> check_custom_pattern("(?<=user=)[a-z]+")
    'not a linear-time pattern (RE2 cannot run it): invalid perl operator: (?<='
    """
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        return f"invalid regular expression: {exc}"
    except (OverflowError, RecursionError, MemoryError) as exc:  # "a{99999999999}", deep nesting
        return f"invalid regular expression: {type(exc).__name__}"
    if rx.fullmatch("") is not None:
        return "the pattern matches the empty string"
    try:
        _compile_linear(pattern)
    except Exception as exc:  # noqa: BLE001 - re2.error, or a pattern too large for its memory budget
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        return f"not a linear-time pattern (RE2 cannot run it): {str(reason)[:200]}"
    return None


# Longer strings are cut before matching (the window matched reaches PREFIX_MARGIN past the
# cut); ``ingest.redaction.max_value_chars`` sets it per topology.
MAX_VALUE_CHARS = 1024
ELLIPSIS = "…"
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")


def _percent_decoded(s: str) -> str:
    """``s`` with %XX escapes decoded (URL encoding), up to three levels deep."""
    from urllib.parse import unquote

    for _ in range(3):
        if "%" not in s or _PERCENT.search(s) is None:
            break
        s = unquote(s, errors="replace")
    return s


_JSON_ESCAPE = re.compile(r'\\(?:u([0-9A-Fa-f]{4})|(["\\/bfnrt]))')
_JSON_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape_one(m: re.Match) -> str:
    if m.group(1) is not None:
        c = chr(int(m.group(1), 16))
        return "\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c
    return _JSON_SIMPLE[m.group(2)]


def json_unescaped(s: str) -> str:
    """``s`` with the escapes of JSON strings decoded (``\\/``, ``\\t``, ``\\u00e9``...), for
    text that may be JSON cut anywhere (a dead letter's excerpt): what an escape hides from
    the rules (``jane\\u0040example.com``, ``https:\\/\\/u:pw@db``) is matched on the decoded text.
    A lone surrogate becomes U+FFFD.

    >>> json_unescaped(r'{"to": "jane\\u0040example.com", "u": "a\\/b\\tc"}')
    '{"to": "jane@example.com", "u": "a/b\\tc"}'
    """
    return _JSON_ESCAPE.sub(_unescape_one, s) if "\\" in s else s


class Redactor:
    """Replaces what the chosen rules match with placeholders.

    Parameters
    ----------
    rules
        Built-in rules to apply, from :data:`BUILTIN_RULES`.
    custom
        The operator's rules, ``(name, pattern, replacement)``; ``replacement`` ``None`` means
        ``<name>``. Applied after the built-in rules, in order.
    cache_size
        Distinct strings (and label sets) remembered. Labels repeat across points, so most
        lookups are hits; log bodies rarely repeat and have their own, smaller cache.
    max_value_chars
        A string longer than this (a label key or value, a metric or span name) is cut to it
        before it is matched (the match window reaches :data:`PREFIX_MARGIN` further, so nothing
        straddling the cut survives in part), and ends in an ellipsis. :attr:`capped` counts them.

    Raises
    ------
    ValueError
        For an unknown built-in rule or an unusable custom pattern (config validation reports
        these with their path first; see ``streams.config``).

    Examples
    --------
    >>> r = Redactor(["pan"], [("employee", r"EMP-[0-9]{6}", None)])
    >>> r.text("EMP-123456 paid with 5555-5555-5555-4444, mail ops@example.com")
    '<employee> paid with <pan>, mail ops@example.com'
    >>> Redactor([]).active
    False
    """

    def __init__(self, rules: Iterable[str] = DEFAULT_RULES,
                 custom: Iterable[tuple[str, str, str | None]] = (), *, cache_size: int = 65536,
                 max_value_chars: int = MAX_VALUE_CHARS):
        rules = tuple(rules)
        self.rules = rules
        self._builtin = compile_builtin(rules)
        compiled = []
        for name, pattern, replacement in custom:
            problem = check_custom_pattern(pattern)
            if problem is not None:
                raise ValueError(f"redaction rule {name!r}: {problem}")
            compiled.append((_compile_linear(pattern), f"<{name}>" if replacement is None else replacement))
        self._custom = tuple(compiled)
        self._secret_keys = "token" in rules
        self.active = bool(self._builtin) or bool(self._custom)
        self.max_value_chars = max_value_chars
        self.capped = 0  # strings cut to max_value_chars before matching (cache misses only)
        self._labels_cache: dict[tuple, tuple] = {}
        self._labels_max = cache_size
        if self.active:
            self.text = lru_cache(maxsize=cache_size)(self._capped)  # type: ignore[method-assign]
            self._body = lru_cache(maxsize=4096)(self._apply)
        else:
            self.text = self._cut  # type: ignore[method-assign]
            self._body = _same

    @classmethod
    def from_settings(cls, settings) -> Redactor:
        """From ``topology.ingest.redaction`` (:class:`streams.config.RedactionSettings`)."""
        return cls(settings.rules, [(r.name, r.pattern, r.replacement) for r in settings.custom],
                   max_value_chars=getattr(settings, "max_value_chars", MAX_VALUE_CHARS))

    def _cut(self, s: str) -> str:
        if len(s) <= self.max_value_chars:
            return s
        self.capped += 1
        return s[:self.max_value_chars] + ELLIPSIS

    def _capped(self, s: str) -> str:
        if len(s) <= self.max_value_chars:
            return self._apply(s)
        self.capped += 1
        return self._apply(s[:self.max_value_chars + PREFIX_MARGIN])[:self.max_value_chars] + ELLIPSIS

    def _rules(self, s: str) -> str:
        for select, replacement in self._builtin:
            rx = select(s)
            if rx is not None:
                if select is _token_pattern:
                    start = _token_start(s, rx)
                    s = rx.sub(replacement, s) if start == 0 else _sub_from(rx, replacement, s, start)
                elif select is _email_pattern and (start := _email_start(s)):
                    # The character before ``start`` is a space, which the address pattern's only
                    # lookbehind (not a local-part character) reads as it reads the string's start.
                    s = s[:start] + rx.sub(replacement, s[start:])
                else:
                    s = rx.sub(replacement, s)
        for rx, replacement in self._custom:
            try:
                s = rx.sub(lambda _m, r=replacement: r, s)
            except UnicodeEncodeError:  # a lone surrogate: RE2 reads UTF-8
                s = rx.sub(lambda _m, r=replacement: r, s.encode("utf-8", "replace").decode("utf-8"))
        return s

    def _apply(self, s: str) -> str:
        out = self._rules(s)
        if "%" in s:
            # URL encoding hides "@" (%40), spaces (%20) and separators from the rules: match
            # the decoded text too, and when it hides something, the decoded text, redacted, is
            # the answer ("mailto:jane%40example.com" becomes "mailto:<email>").
            decoded = _percent_decoded(s)
            if decoded != s:
                red = self._rules(decoded)
                if red != decoded:
                    return red
        return out

    def text(self, s: str) -> str:
        """``s`` with every match replaced, cached per distinct string. (``__init__`` shadows
        this method with an ``lru_cache`` of :meth:`_apply`, or with the identity when no rule is
        on, so a lookup costs one C call; this body only documents it.)"""
        return self._apply(s)

    def redact(self, s: str) -> str:
        """``s`` with every match replaced, whole (no cap) and not cached: for text already
        bounded by its caller, seen once (a dead letter's excerpt)."""
        return self._apply(s) if self.active else s

    def prefix(self, s: str, limit: int) -> str:
        """The first ``limit`` characters of ``s``, redacted. The redacted window reaches
        :data:`PREFIX_MARGIN` characters past the cut, so a match that straddles it is still
        found whole.

        >>> Redactor().prefix("card 4111 1111 1111 1111 declined", 12)
        'card <pan> d'
        """
        if len(s) <= limit:
            return self._body(s)
        return self._body(s[:limit + PREFIX_MARGIN])[:limit]

    def labels(self, labels: tuple[tuple[str, str], ...], note=None) -> tuple[tuple[str, str], ...]:
        """Sorted ``(key, value)`` pairs, redacted: keys and values by the text rules, and the
        whole value of a secret-looking key when the ``token`` rule is on. Two keys that redact
        to the same text keep the value of the later one. A key or value longer than
        ``max_value_chars`` is cut (see :meth:`text`), and ``note``, when given, is called with
        the reason (once per distinct label set)."""
        if not labels:
            return labels
        cache = self._labels_cache
        out = cache.get(labels)
        if out is None:
            text = self.text
            cap = self.max_value_chars
            if note is not None:
                for k, v in labels:
                    if len(k) > cap or len(v) > cap:
                        note(f"label {text(k)[:60]!r}: a key or value of {max(len(k), len(v))} characters was cut "
                             f"to ingest.redaction.max_value_chars ({cap}) before redaction")
                        break
            if not self.active and all(len(k) <= cap and len(v) <= cap for k, v in labels):
                return labels
            secret = _SECRET_KEY.search if self._secret_keys else None
            red: dict[str, str] = {}
            for k, v in labels:
                red[text(k)] = TOKEN if secret is not None and v and secret(k[-200:].strip("\\ \"'`")) else text(v)
            out = tuple(sorted(red.items()))
            if out == labels:
                out = labels  # share the caller's tuple: no second copy per series
            if len(cache) >= self._labels_max:
                cache.clear()  # a bound, not an LRU: label sets are few and stable in practice
            cache[labels] = out
        return out


def _same(s: str) -> str:
    return s


def _sub_from(rx: re.Pattern, replace, s: str, start: int) -> str:
    """``rx.sub(replace, s)`` (``replace`` a function) for an ``rx`` that matches nothing that
    starts before ``start``."""
    out = []
    at = 0
    for m in rx.finditer(s, start):
        out.append(s[at:m.start()])
        out.append(replace(m))
        at = m.end()
    if not out:
        return s
    out.append(s[at:])
    return "".join(out)


DEFAULT = Redactor()  # the defaults of ``ingest.redaction``: email, pan, token

__all__ = ["BUILTIN_RULES", "DEFAULT", "DEFAULT_RULES", "PLACEHOLDERS", "Redactor", "check_custom_pattern",
           "luhn_valid"]
