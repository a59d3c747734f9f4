# Every target installs first, so each is the only command a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SHARED ?= ../shared

.PHONY: install run test fuzz bench load nab eval eval-real eval-alertmanager clean

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

# Every parser's fuzz target (tests/property/fuzz.py) for FUZZ_SECONDS each (default 30), over
# the corpora in tests/property/corpus/: executions, crashes, hangs, leaks and the slowest input
# per target, in out/fuzz/report.json (failing and slowest inputs beside it). `make test` runs a
# bounded number of examples of each (tests/property/test_fuzz_targets.py).
FUZZ_SECONDS ?= 30
fuzz: install
	$(PY) -m tests.property.fuzz --seconds $(FUZZ_SECONDS) --out out/fuzz

bench: install
	$(PY) -m tests.bench.run

# One worker under a steady rate for 10 minutes: RSS and lag every 15 s, then a summary.
# LOAD_RATE (points/s, default 10000) and LOAD_SECONDS (default 600) change it.
load: install
	$(PY) -m tests.bench.load

# What pages: 1 where production fires an alert (shipped topology.yaml, production defaults), 0
# elsewhere, scored by NAB at threshold 0.5; then leave-one-category-out of the same alerts.
NAB_SCORE = $(PY) $(SHARED)/nab/nab_score.py --data $(SHARED)/nab/data --labels $(SHARED)/nab/combined_windows.json
nab: install
	$(VENV)/bin/aiops nab --topology topology.yaml --data $(SHARED)/nab/data --out out/nab
	echo '{"standard": 0.5, "reward_low_FP_rate": 0.5, "reward_low_FN_rate": 0.5}' > out/nab-thresholds.json
	$(NAB_SCORE) --results out/nab --thresholds out/nab-thresholds.json
	$(PY) -m evaluation.nab_loco --data $(SHARED)/nab/data --labels $(SHARED)/nab/combined_windows.json \
		--scorer $(SHARED)/nab/nab_score.py

eval: install
	$(PY) -m evaluation.run --out out/eval

# The real fault days of $(SHARED)/real/nezha and the Sock Shop cases of $(SHARED)/rca-data as
# OTLP/JSON through the production core: false incidents per quiet hour, alerts per series-day,
# fault recall, own incidents and AC@k (evaluation/real.py). Writes out/eval-real/.
eval-real: install
	$(PY) -m evaluation.real --shared $(SHARED) --out out/eval-real

# Needs Debian's Alertmanager: apt-get install -y prometheus-alertmanager (skips, saying so, without it).
eval-alertmanager: install
	$(PY) -m evaluation.alertmanager --out out/alertmanager

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
