"""HH-RLHF rows dropped as malformed (issue 25.17): when none is left, the error says how many
rows were dropped and why, not only that the set "has no pairs"."""

from __future__ import annotations

import json

import pytest

from c2f_exp.reward import preferences as prefs
from c2f_exp.reward.model import EmptyPreferenceSetError


def test_all_rows_dropped_names_the_count_and_the_reasons(tmp_path):
    conv = "\n\nHuman: hi\n\nAssistant: "
    rows = [
        {"chosen": "Human: hi Assistant: a", "rejected": "Human: hi Assistant: b"},  # no \n\n
        {"chosen": "Human: x Assistant: a", "rejected": "Human: x Assistant: b"},
        {"chosen": conv + "same", "rejected": conv + "same"},
        {"chosen": conv + "a", "rejected": "\n\nHuman: other\n\nAssistant: b"},
        {"chosen": conv + "a", "rejected": conv + "b"},  # the file's last tenth: split test
    ]
    f = tmp_path / "hh.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(EmptyPreferenceSetError) as e:
        prefs.hh_pairs(str(f), "train", None)
    msg = str(e.value)
    assert "has no pairs: all 4 rows were dropped as malformed (" in msg, msg
    assert "2 without alternating Human/Assistant turns" in msg
    assert "1 with the same chosen and rejected reply" in msg
    assert "1 whose chosen and rejected differ before the last reply" in msg
    assert "\n" not in msg
