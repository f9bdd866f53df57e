"""Damage the artifact cache's own bookkeeping (issue 25.14): an edited result.json is rebuilt
like any other corruption; a file where a stage directory belongs is a named error."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from c2f_exp import pipeline
from c2f_exp.core import artifacts, cache
from c2f_exp.core.errors import ConfigError
from c2f_exp.core.tracking import Tracker


class TinyStage:
    name = "tiny"
    checkpoints = False

    def __init__(self):
        self.builds = 0

    def config_subtree(self, cfg):
        return {}

    def run(self, ctx, out: Path):
        self.builds += 1
        (out / "config.json").write_text('{"hidden": 8}')
        return {"x": 1.0}


def _run(stage, tmp: Path) -> dict:
    cfg = OmegaConf.create({"force": False})
    tracker = Tracker(OmegaConf.create({"backend": "none", "mode": "disabled"}), tmp, {})
    art = tmp / "cache" / stage.name / "k0"
    return pipeline._run_stage(stage, cfg, tmp / "run", art, "k0", tracker, {})


@pytest.mark.parametrize("text", ["{}", "[]", '{"metrics": [], "files": {}}', '"x"'])
def test_edited_result_json_is_damage_and_rebuilt(tmp_path, caplog, text):
    stage = TinyStage()
    _run(stage, tmp_path)
    result = tmp_path / "cache" / "tiny" / "k0" / "result.json"
    result.write_text(text)
    with caplog.at_level(logging.WARNING, logger="c2f_exp.pipeline"):
        entry = _run(stage, tmp_path)
    assert entry["status"] == "done" and stage.builds == 2 and entry["metrics"] == {"x": 1.0}
    assert any("result.json" in r.message and "rebuilding" in r.message for r in caplog.records)
    assert json.loads(result.read_text())["metrics"] == {"x": 1.0}
    assert _run(stage, tmp_path)["status"] == "reused"


def test_verify_result_names_the_file(tmp_path):
    with pytest.raises(
        cache.CorruptArtifact, match=r"result.json is not the object .*\(got \[\]\)"
    ):
        cache.verify_result(tmp_path, [])
    assert cache.verify_result(tmp_path, {"metrics": {}}) == {"metrics": {}}  # pre-fingerprint


def test_a_file_where_a_stage_dir_belongs_is_a_named_error(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "tiny").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"cache/tiny is a file where the artifact cache needs"):
        _run(TinyStage(), tmp_path)
    deeper = tmp_path / "cache" / "tiny" / "sub" / "k1"
    with pytest.raises(ConfigError, match=r"move or delete it, or set paths\.cache_dir"):
        artifacts.claim(deeper).__enter__()


@pytest.mark.parametrize(
    "text",
    [
        "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
        "data/0: file write failed",  # torch.save (a checkpoint) on a full disk
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
        'left on device" })',  # safetensors
    ],
)
def test_disk_full_inside_a_library_is_one_named_line(tmp_path, text):
    """Issue 25.10: a full disk during a checkpoint write surfaces as torch's RuntimeError,
    not an OSError: it too names the path and the free space."""

    class FullDisk(TinyStage):
        def run(self, ctx, out):
            (ctx.work_dir / "ckpt").write_text("step 1")
            raise RuntimeError(text)

    with pytest.raises(artifacts.ArtifactWriteError) as e:
        _run(FullDisk(), tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"cannot write {tmp_path / 'cache' / 'tiny' / 'k0'} (")
    assert "MiB free there; free space or set paths.cache_dir=" in msg and "\n" not in msg
    assert artifacts.write_error(RuntimeError("shape mismatch"), tmp_path) is None  # others
