"""Hypothesis profiles: ``make test`` is a gate, so it draws the same examples on every run.

A property test that fails only on some runs' random draws turns CI red for a change that did
not cause it, and cannot be reproduced from the log. So the default profile is derandomized: each
test's examples follow from the test itself, and a change to the code under test is what changes
the outcome. Exploring new inputs is a separate act: ``HYPOTHESIS_PROFILE=explore make test``
draws fresh random examples (as ``make fuzz`` does for the parsers); add what it finds to the
tests or the corpora, so the gate keeps it.
"""
from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("gate", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gate"))
