"""The token rule's gates, as written for speed (the auth and kv gates searched backwards in the
reversed string, one-character tests before the shape leads), choose exactly the alternatives the
two-stage gates chose before them: the word tests, then ``NARROW`` and the shape leads. The same
choice for every string, so the same output, whatever the alternatives would have matched. One
difference on purpose: a "github_pat_" lead alone now chooses the shape alternative (before, it
needed a word such as "gh" elsewhere, and a fine-grained GitHub token alone in a line leaked).
"""
from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from streams.ingest import redact
from tests.property.test_redaction_gates import KEYS, SEPARATORS, SETTINGS, SHAPES, WORDS, reference_word_mask, texts

_GITHUB = re.compile(r"gh[pousr]_")
# The second gates as first written, forwards on the lowercased string (ASCII strings only).
NARROW = ((1, re.compile(r"authorization(?:\\?[\"'])?\s*[:=]")),
          (2, re.compile(r"bearer\s")),
          (4, re.compile(r"(?:key|token|secret|passw(?:or)?d|pwd)(?:\\?[\"'])?\s*[:=]")))


def _old_shape_lead(s: str) -> bool:
    return ("AKIA" in s or "ASIA" in s or "AIza" in s or "eyJ" in s or "xox" in s or "glpat-" in s
            or "_" in s and ("k_live_" in s or "k_test_" in s or "whsec_" in s or "github_pat_" in s
                             or _GITHUB.search(s) is not None))


def reference_mask(s: str) -> int:
    """The alternatives (bits of ``redact._TOKEN_PARTS``) the gates chose before they were rewritten."""
    low = s.lower()
    mask = reference_word_mask(s)
    if mask & 8 and not _old_shape_lead(s):
        mask &= ~8
    if mask & 7 and s.isascii():
        for bit, rx in NARROW:
            if mask & bit and rx.search(low) is None:
                mask &= ~bit
    return mask


def mask_of(s: str) -> int:
    rx = redact._token_pattern(s)
    if rx is None:
        return 0
    return next(m for m, p in redact._TOKEN_RX.items() if p is rx)


@SETTINGS
@given(texts)
def test_the_gates_choose_the_alternatives_they_chose_before(text):
    assert mask_of(text) == reference_mask(text)


# Around the separators (quotes, escapes, whitespace runs) and the leads, one piece at a time.
pieces = st.sampled_from(KEYS + SHAPES + WORDS + SEPARATORS + ["github_pat_", "AKIA", "eyJ", "k_live_", "gh", "ia", "@",
                                                                 "'", '"', "\\", " ", "\t", "\u00a0", "\x1c"])


@SETTINGS
@given(st.lists(pieces | st.text(max_size=4), max_size=8).map("".join))
def test_the_gates_on_pieces_near_their_edges(text):
    assert mask_of(text) == reference_mask(text)
    assert mask_of(text.upper()) == reference_mask(text.upper())


def test_examples():
    for text, mask in [("github_pat_" + "x1_" * 11, 8), ("github_pat_" + "x1_" * 11 + " high", 8),
                       ("Authorization : \\\"Bearer x", 1 | 2), ("x PASSWORD\\' = y", 4), ("key id=3", 0),
                       ("AKIA" + "A" * 16, 8), ("passwd\n\t:", 4)]:
        assert mask_of(text) == reference_mask(text) == mask, text


def _starts(rx: re.Pattern, s: str) -> list[int]:
    return [p for p in range(len(s) + 1) if rx.match(s, p) is not None]


@SETTINGS
@given(texts)
def test_no_token_match_starts_before_the_scan_does(text):
    # Stronger than the output being the same: no position before the bound starts a match of the
    # alternation, whether or not the matches before it would have hidden it.
    rx = redact._token_pattern(text)
    if rx is not None:
        assert all(p >= redact._token_start(text, rx) for p in _starts(rx, text))


@SETTINGS
@given(st.lists(pieces | st.text(max_size=4), max_size=8).map("".join))
def test_no_match_starts_before_the_scan_does_on_pieces(text):
    for s in (text, text.upper(), "x " + text):
        rx = redact._token_pattern(s)
        if rx is not None:
            assert all(p >= redact._token_start(s, rx) for p in _starts(rx, s)), s
        if "@" in s:
            assert all(p >= redact._email_start(s) for p in _starts(redact._EMAIL_RX, s)), s


def test_the_scan_starts_late_on_the_bench_line():
    line = "GET /api/v1/cart cache miss took 17 ms for Bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl"
    rx = redact._token_pattern(line)
    assert redact._token_start(line, rx) == line.index("Bearer")
    assert redact.DEFAULT.redact(line) == "GET /api/v1/cart cache miss took 17 ms for Bearer <token>"


def test_a_fine_grained_github_token_alone_is_redacted():
    token = "github_pat_11ABCDEFG0" + "a1B2c3D4e5" * 8
    assert redact.Redactor().text(f"push with {token}") == "push with <token>"
    assert redact.Redactor().text(token) == "<token>"
