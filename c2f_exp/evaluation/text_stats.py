"""Text statistics of model answers: the redundancy the Fine Actor is meant to remove.

All functions are pure. Words are whitespace tokens, lower-cased. Definitions:

* distinct-n (Li et al., 2016, "A Diversity-Promoting Objective..."): unique n-grams / all
  n-grams, pooled over every answer of a model (corpus level).
* repetition rate (within an answer): (n-grams - unique n-grams) / n-grams, i.e. the share of an
  answer's n-grams that repeat one seen earlier in the same answer; averaged over answers that
  have at least one n-gram.
* compression ratio: len(utf-8 bytes) / len(zlib.compress(bytes, 9)) per answer, averaged;
  redundant text compresses better (higher ratio). zlib's ~8-byte overhead pulls short answers
  below 1, so compare models on the same questions, not against a fixed threshold.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence


def words(text: str) -> list[str]:
    return text.lower().split()


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique n-grams / total n-grams over all `texts` (0.0 when there are none)."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(text: str, n: int = 3) -> float:
    """Share of the answer's n-grams that repeat an earlier n-gram of the same answer."""
    grams = ngrams(words(text), n)
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


def compression_ratio(text: str) -> float:
    """Raw bytes / zlib-compressed bytes (level 9); 0.0 for an empty text."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw, 9)) if raw else 0.0


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def text_stats(
    texts: Sequence[str],
    eos: Sequence[bool] | None = None,
    n_tokens: Sequence[int] | None = None,
    repetition_n: int = 3,
) -> dict[str, float]:
    """Statistics of one model's answers.

    Args:
        texts: the answers (N,).
        eos: whether each answer ended with the EOS token (N,), if known.
        n_tokens: generated tokens per answer (N,), if known.
        repetition_n: n of the within-answer repetition rate.
    Returns:
        n, mean_words, [mean_tokens, tokens_per_word], [eos_rate], distinct_1, distinct_2,
        repetition_rate, compression_ratio.
    """
    if eos is not None and len(eos) != len(texts):
        raise ValueError(f"eos has {len(eos)} entries for {len(texts)} texts")
    if n_tokens is not None and len(n_tokens) != len(texts):
        raise ValueError(f"n_tokens has {len(n_tokens)} entries for {len(texts)} texts")
    n_words = [len(words(t)) for t in texts]
    out = {"n": float(len(texts)), "mean_words": _mean(n_words)}
    if n_tokens is not None:
        out["mean_tokens"] = _mean([float(k) for k in n_tokens])
        out["tokens_per_word"] = sum(n_tokens) / sum(n_words) if sum(n_words) else 0.0
    if eos is not None:
        out["eos_rate"] = _mean([float(bool(e)) for e in eos])
    out["distinct_1"] = distinct_n(texts, 1)
    out["distinct_2"] = distinct_n(texts, 2)
    rated = [t for t in texts if len(words(t)) >= repetition_n]
    out["repetition_rate"] = _mean([repetition_rate(t, repetition_n) for t in rated])
    out["compression_ratio"] = _mean([compression_ratio(t) for t in texts if t])
    return out
