"""The artifact cache around a stage (pipeline._run_stage with a small in-process stage):
verification of reused artifacts (issue 12.2), the package version in the cache key, cleanup of
killed builds' temp dirs and failed builds' work dirs (14.6), disk-full / permission failures
that keep the previous artifact (12.3), and an unwritable cache dir at preflight."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from c2f_exp import pipeline
from c2f_exp.core import artifacts, cache
from c2f_exp.core.errors import ConfigError
from c2f_exp.core.tracking import Tracker


class FakeStage:
    """Writes a safetensors file and a config.json; counts its builds."""

    name = "fake"

    def __init__(self, checkpoints: bool = True, fail: BaseException | None = None):
        self.checkpoints, self.fail, self.builds = checkpoints, fail, 0

    def config_subtree(self, cfg):
        return {}

    def preflight(self, cfg):
        pass

    def run(self, ctx, out: Path):
        self.builds += 1
        (ctx.work_dir / "ckpt").write_text("step 1") if self.checkpoints else None
        save_file({"w": torch.arange(64, dtype=torch.float32)}, out / "model.safetensors")
        (out / "config.json").write_text(json.dumps({"hidden": 8}))
        if self.fail is not None:
            raise self.fail
        return {"x": 1.0}


def run_stage(stage, tmp: Path, force: bool = False) -> dict:
    cfg = OmegaConf.create({"force": force})
    tracker = Tracker(OmegaConf.create({"backend": "none", "mode": "disabled"}), tmp, {})
    art = tmp / "cache" / stage.name / "k0"
    return pipeline._run_stage(stage, cfg, tmp / "run", art, "k0", tracker, {})


def art_dir(tmp: Path) -> Path:
    return tmp / "cache" / "fake" / "k0"


def test_result_json_records_sizes_header_hashes_and_version(tmp_path):
    run_stage(FakeStage(), tmp_path)
    result = json.loads((art_dir(tmp_path) / "result.json").read_text())
    files = result["files"]
    st = art_dir(tmp_path) / "model.safetensors"
    assert files["model.safetensors"]["size"] == st.stat().st_size
    assert len(files["model.safetensors"]["header_sha256"]) == 64
    assert "sha256" in files["config.json"]
    assert result["version"] == artifacts.package_version()


def test_untouched_artifact_is_reused(tmp_path):
    stage = FakeStage()
    assert run_stage(stage, tmp_path)["status"] == "done"
    assert run_stage(stage, tmp_path)["status"] == "reused"
    assert stage.builds == 1


@pytest.mark.parametrize("damage", ["truncate", "pad", "edit_config", "delete", "edit_header"])
def test_damaged_artifact_is_named_and_rebuilt_automatically(tmp_path, caplog, damage):
    stage = FakeStage()
    run_stage(stage, tmp_path)
    art = art_dir(tmp_path)
    st, conf = art / "model.safetensors", art / "config.json"
    if damage == "truncate":
        st.write_bytes(st.read_bytes()[:-10])
    elif damage == "pad":
        st.write_bytes(st.read_bytes() + b"\0")
    elif damage == "edit_config":
        conf.write_text(conf.read_text().replace("8", "9"))  # same size, other content
    elif damage == "delete":
        conf.unlink()
    else:  # a same-size edit of the header: another dtype name of equal length
        st.write_bytes(st.read_bytes().replace(b'"F32"', b'"I32"', 1))
    named = "config.json" if damage in ("edit_config", "delete") else "model.safetensors"
    with pytest.raises(cache.CorruptArtifact, match=f"{named}"):
        cache.verify(art, json.loads((art / "result.json").read_text())["files"])
    with caplog.at_level(logging.WARNING, logger="c2f_exp.pipeline"):
        entry = run_stage(stage, tmp_path)
    assert entry["status"] == "done" and stage.builds == 2
    assert any(named in r.message and "rebuilding" in r.message for r in caplog.records)
    cache.verify(art, json.loads((art / "result.json").read_text())["files"])  # whole again


def test_package_version_is_part_of_the_cache_key(monkeypatch):
    a = artifacts.config_hash({"stage": "merge", "config": {}})
    monkeypatch.setattr(artifacts, "package_version", lambda: "99.0")
    assert artifacts.config_hash({"stage": "merge", "config": {}}) != a
    assert not hasattr(artifacts, "CODE_VERSION")  # no hand-bumped constant any more


def test_killed_builds_temp_dirs_are_removed_by_the_next_build(tmp_path):
    parent = art_dir(tmp_path).parent
    parent.mkdir(parents=True)
    orphans = [parent / ".tmp-k0-123-456", parent / ".old-k0-789"]
    other = parent / ".tmp-otherkey-1-2"  # another artifact's: not ours to judge
    for d in [*orphans, other]:
        d.mkdir()
        (d / "partial.bin").write_bytes(b"x")
    run_stage(FakeStage(), tmp_path)
    assert not any(d.exists() for d in orphans)
    assert other.exists()


def test_failed_merge_or_eval_build_leaves_no_work_dir(tmp_path):
    with pytest.raises(RuntimeError):
        run_stage(FakeStage(checkpoints=False, fail=RuntimeError("boom")), tmp_path)
    parent = art_dir(tmp_path).parent
    assert sorted(p.name for p in parent.iterdir()) == ["k0.lock"]  # no .work, no .tmp-*


def test_failed_checkpointing_build_keeps_its_work_dir_for_resume(tmp_path):
    with pytest.raises(RuntimeError):
        run_stage(FakeStage(checkpoints=True, fail=RuntimeError("boom")), tmp_path)
    assert (art_dir(tmp_path).with_name("k0.work") / "ckpt").is_file()


def test_merge_and_eval_stages_say_they_do_not_checkpoint():
    from c2f_exp.pipeline import registry

    stages = registry()
    assert stages["merge"].checkpoints is False and stages["eval"].checkpoints is False


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_disk_full_or_denied_keeps_previous_artifact_and_names_path(tmp_path, monkeypatch, code):
    stage = FakeStage(checkpoints=False)
    run_stage(stage, tmp_path)
    art = art_dir(tmp_path)
    before = (art / "model.safetensors").read_bytes()
    real = Path.write_text

    def failing(self, *a, **k):  # the rebuild's config.json write hits a full/locked disk
        if ".tmp-" in str(self):
            raise OSError(code, errno.errorcode[code], str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", failing)
    with pytest.raises(artifacts.ArtifactWriteError) as e:
        run_stage(stage, tmp_path, force=True)
    msg = str(e.value)
    assert "\n" not in msg and "config.json" in msg and ".tmp-k0-" in msg
    assert f"previous artifact at {art}" in msg and "MiB free" in msg
    monkeypatch.undo()
    assert artifacts.is_complete(art) and (art / "model.safetensors").read_bytes() == before
    cache.verify(art, json.loads((art / "result.json").read_text())["files"])
    assert not list(art.parent.glob(".tmp-*")) and not art.with_name("k0.work").exists()


def test_unwritable_cache_dir_is_a_named_preflight_error(tmp_path, monkeypatch):
    import tempfile

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", denied)
    with pytest.raises(ConfigError, match=r"^paths.cache_dir=.* is not a writable directory"):
        artifacts.check_writable(tmp_path / "cache", "paths.cache_dir")
    monkeypatch.undo()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"NotADirectoryError.*set paths.cache_dir="):
        artifacts.check_writable(tmp_path / "file" / "cache", "paths.cache_dir")
    assert artifacts.check_writable(tmp_path / "ok", "k") == tmp_path / "ok"
