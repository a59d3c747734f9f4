"""`make bench`: every benchmark, each printing ratios against a baseline measured in the same run."""
from __future__ import annotations

import importlib
import sys

BENCHES = ["tests.bench.otlp_bench", "tests.bench.pipeline_bench", "tests.bench.detector_bench", "tests.bench.rca_bench",
           "tests.bench.kafka_bench", "tests.bench.redaction_bench", "tests.bench.scaling_bench",
           "tests.bench.traces_bench", "tests.bench.runbook_bench", "tests.bench.restart_bench",
           "tests.bench.checkpoint_bench"]


def main() -> int:
    failed = []
    for name in BENCHES:
        print(f"== {name}", flush=True)
        try:
            importlib.import_module(name).main()
        except ModuleNotFoundError as exc:
            print(f"   skipped: {exc}")
        except Exception as exc:  # one broken bench must not hide the others' figures
            print(f"   FAILED: {exc!r}")
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
