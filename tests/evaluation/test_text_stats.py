"""Text statistics on hand-made strings, with counts worked out by hand."""

from __future__ import annotations

import zlib

import pytest

from c2f_exp.evaluation.text_stats import (
    compression_ratio,
    distinct_n,
    repetition_rate,
    text_stats,
)


def test_distinct_n_pooled_over_answers():
    texts = ["a b a", "b c"]  # unigrams a b a b c: 3 unique of 5
    assert distinct_n(texts, 1) == pytest.approx(3 / 5)
    # bigrams (a b) (b a) (b c): all unique; pairs never cross answers
    assert distinct_n(texts, 2) == pytest.approx(1.0)
    assert distinct_n(["A a"], 1) == pytest.approx(1 / 2)  # lower-cased
    assert distinct_n([""], 2) == 0.0


def test_repetition_rate_within_answer():
    # 3-grams of "x y z x y z x": xyz yzx zxy xyz yzx -> 5 grams, 3 unique, 2 repeats
    assert repetition_rate("x y z x y z x", 3) == pytest.approx(2 / 5)
    assert repetition_rate("one two three four", 3) == 0.0
    assert repetition_rate("too short", 3) == 0.0
    assert repetition_rate("a a a a", 1) == pytest.approx(3 / 4)


def test_compression_ratio_grows_with_redundancy():
    varied = "the blick is red . the zorp eats seeds . the snarl lives in the swamp ."
    redundant = "the blick is red . " * 8
    raw = redundant.encode()
    assert compression_ratio(redundant) == pytest.approx(len(raw) / len(zlib.compress(raw, 9)))
    assert compression_ratio(redundant) > 2 * compression_ratio(varied)
    assert compression_ratio("") == 0.0


def test_text_stats_summary():
    texts = ["a b c a b c", "d e"]
    s = text_stats(texts, eos=[True, False], n_tokens=[7, 3], repetition_n=2)
    assert s["n"] == 2 and s["mean_words"] == pytest.approx(4.0)
    assert s["mean_tokens"] == pytest.approx(5.0)
    assert s["tokens_per_word"] == pytest.approx(10 / 8)
    assert s["eos_rate"] == pytest.approx(0.5)
    assert s["distinct_1"] == pytest.approx(5 / 8)
    # bigrams: ab bc ca ab bc | de -> 4 unique of 6
    assert s["distinct_2"] == pytest.approx(4 / 6)
    # answer 1: 5 bigrams, 3 unique -> 2/5; answer 2: 1 bigram -> 0; mean 0.2
    assert s["repetition_rate"] == pytest.approx(0.2)
    assert "eos_rate" not in text_stats(texts)


def test_text_stats_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="eos has 1 entries for 2 texts"):
        text_stats(["a", "b"], eos=[True])
