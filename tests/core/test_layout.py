"""c2f_exp.core.layout: the one place that spells artifact layout and reads JSON Lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from c2f_exp.core import artifacts, layout
from c2f_exp.core.errors import ConfigError


def _cfg(base=None):
    spec = {"path": base, "revision": None}
    return OmegaConf.create({"model": {"base": spec, "instruct": {**spec, "path": None}}})


def test_model_dirs_of_each_stage(tmp_path):
    assert (
        layout.stage_model_dir("coarse", tmp_path) == tmp_path / "actor" == tmp_path / layout.ACTOR
    )
    assert layout.stage_model_dir("merge", tmp_path) == tmp_path  # the artifact is the model
    assert layout.stage_model_dir("prepare", tmp_path, "instruct") == tmp_path / "instruct"
    assert artifacts.MODEL_DIRS is layout.MODEL_DIRS  # manifest.json's `models` use the same


def test_model_dir_prefers_the_config_path_then_prepare(tmp_path):
    up = {"prepare": {"path": str(tmp_path)}}
    assert layout.model_dir(_cfg(), up, "instruct") == str(tmp_path / "instruct")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    assert layout.model_dir(_cfg(str(tmp_path / "mine")), up, "base") == str(tmp_path / "mine")
    with pytest.raises(ConfigError, match=r"model\.base\.path is null.*add prepare"):
        layout.model_dir(_cfg(), {}, "base")


def test_prepared_files_are_named_once(tmp_path):
    assert layout.world_file(tmp_path) == tmp_path / "world.json"
    assert layout.data_file(tmp_path, "two_turn.jsonl") == tmp_path / "data" / "two_turn.jsonl"
    with pytest.raises(ValueError, match="not a file the prepare stage writes"):
        layout.data_file(tmp_path, "two_turns.jsonl")


def test_jsonl_round_trip_skips_blank_lines(tmp_path):
    rows = [{"a": 1}, {"b": [1, 2], "c": "x"}]
    path = tmp_path / "sub" / "rows.jsonl"
    layout.write_jsonl(path, rows)  # creates the parent
    path.write_text(path.read_text() + "\n  \n")
    assert layout.read_jsonl(path) == layout.read_jsonl(str(path)) == rows


def test_old_import_sites_still_work():
    """stages.prepare and evaluation.mt_bench_data re-export the one reader."""
    from c2f_exp.evaluation import mt_bench_data
    from c2f_exp.prepare import stage as prepare

    assert prepare.read_jsonl is mt_bench_data.read_jsonl is layout.read_jsonl
    assert mt_bench_data.write_jsonl is layout.write_jsonl
    assert Path(layout.conf_dir(), "config.yaml").is_file()
