# Every target installs first, so each is the only command a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SHARED ?= ../shared

.PHONY: install run test bench load nab eval eval-alertmanager clean

install: $(STAMP)

# Re-installs only when the dependency files change, so `make install` is idempotent and fast.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: install
	$(VENV)/bin/aiops demo --topology topology.yaml

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m tests.bench.run

# One worker under a steady rate for 10 minutes: RSS and lag every 15 s, then a summary.
# LOAD_RATE (points/s, default 10000) and LOAD_SECONDS (default 600) change it.
load: install
	$(PY) -m tests.bench.load

nab: install
	$(VENV)/bin/aiops nab --data $(SHARED)/nab/data --out out/nab
	$(PY) $(SHARED)/nab/nab_score.py --data $(SHARED)/nab/data --labels $(SHARED)/nab/combined_windows.json --results out/nab

eval: install
	$(PY) -m evaluation.run --out out/eval

# Needs Debian's Alertmanager: apt-get install -y prometheus-alertmanager (skips, saying so, without it).
eval-alertmanager: install
	$(PY) -m evaluation.alertmanager --out out/alertmanager

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
