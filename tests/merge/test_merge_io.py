"""Streaming safetensors I/O and the streaming merge engine (c2f_exp.merge.io / .stream).

Tiny Mistral models are built in-process (hidden 32, 2 layers) and perturbed with seeded noise:
base, instruct = base + noise, coarse = base + other noise (coarse saved in several shards): the
`trio` fixture (tests/conftest.py), built by tests.helpers.merge.build_trio.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from c2f_exp.merge import io, methods
from c2f_exp.merge.config import MergerConf
from c2f_exp.merge.stream import merge_models
from tests.helpers.merge import ROLES, TINY, build_trio, load_dir


def test_shard_writer_round_trip(tmp_path):
    tensors = {
        "a": torch.randn(3, 5),
        "b": torch.randn(7).to(torch.bfloat16),
        "c": torch.tensor(2.5),
        "d": torch.arange(6, dtype=torch.int64).view(2, 3),
    }
    w = io.ShardWriter(
        tmp_path / "x.safetensors", [(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()]
    )
    for v in tensors.values():
        w.write(v)
    w.close()
    back = load_file(tmp_path / "x.safetensors")
    assert back.keys() == tensors.keys()
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v)


def test_shard_writer_detects_short_write(tmp_path):
    w = io.ShardWriter(tmp_path / "x.safetensors", [("a", torch.float32, (4,))])
    w.write(torch.zeros(3))
    with pytest.raises(io.MergeError, match=r"expected 16"):
        w.close()


def test_plan_shards_respects_size_and_order():
    e = [(f"t{i}", torch.float32, (n,)) for i, n in enumerate([10, 10, 30, 5, 100, 1])]
    shards = io.plan_shards(e, 100)  # 100 bytes = 25 floats
    assert [x for s in shards for x in s] == e
    for s in shards:
        size = sum(n[0] * 4 for _, _, n in s)
        assert size <= 100 or len(s) == 1
    assert [len(s) for s in shards] == [2, 1, 1, 1, 1]


def test_model_dir_reads_sharded_and_single(trio):
    c, i = io.ModelDir(trio["coarse"], "merger.coarse"), io.ModelDir(trio["instruct"], "x")
    assert len(c.files) > 1 and len(i.files) == 1
    assert c.tensors.keys() == i.tensors.keys()
    name = "model.layers.1.mlp.up_proj.weight"
    assert c.flat(name).shape == (64 * 32,) and c.num_layers == 2
    assert c.fingerprint() != i.fingerprint()
    assert c.fingerprint() == io.ModelDir(trio["coarse"], "y").fingerprint()


def test_model_dir_errors_name_key(tmp_path, trio):
    with pytest.raises(io.MergeError, match=r"merger.base=.*not a directory"):
        io.ModelDir(tmp_path / "nope", "merger.base")
    (tmp_path / "empty").mkdir()
    with pytest.raises(io.MergeError, match=r"merger.base=.*no config.json"):
        io.ModelDir(tmp_path / "empty", "merger.base")
    shutil.copy(Path(trio["base"]) / "config.json", tmp_path / "empty")
    with pytest.raises(
        io.MergeError, match=r"merger.base=.*has no weights; models load from safetensors only"
    ):
        io.ModelDir(tmp_path / "empty", "merger.base")
    (tmp_path / "empty" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{bad")
    with pytest.raises(io.MergeError, match=r"merger.base: .*not a safetensors"):
        io.ModelDir(tmp_path / "empty", "merger.base")
    broken = tmp_path / "broken"
    shutil.copytree(trio["coarse"], broken)
    next(broken.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(io.MergeError, match=r"missing shard"):
        io.ModelDir(broken, "merger.coarse")


def _reference(trio, method: str, m: MergerConf) -> dict[str, torch.Tensor]:
    """In-memory merge: whole state dicts, `methods.merge_tensor` per tensor."""
    sd = {r: load_dir(trio[r]) for r in ROLES}
    coef = [
        float(v) for v in (m.coefficient if isinstance(m.coefficient, list) else [m.coefficient])
    ]
    p = methods.Params(m.filter, m.density, m.drop_p, m.seed)
    out = {}
    for name in sd["instruct"]:
        lam = methods.coefficient_for(name, coef, {}, 2)
        out[name] = methods.merge_tensor(
            method, {r: sd[r][name] for r in ROLES}, lam, p, methods.tensor_key(name, m.seed)
        )
    return out


@pytest.mark.parametrize(
    "method,extra",
    [
        ("knowledge_residue", {}),
        ("knowledge_residue", {"filter": "magnitude", "density": 0.3}),
        ("knowledge_residue", {"filter": "dare", "drop_p": 0.4}),
        ("knowledge_residue", {"filter": "sign_agree"}),
        ("linear", {}),
        ("slerp", {}),
        ("ties", {"density": 0.5}),
        ("dare", {"drop_p": 0.3}),
    ],
)
def test_streaming_equals_in_memory(trio, tmp_path, monkeypatch, method, extra):
    """Small blocks force multi-block tensors with ragged tails through the streaming path."""
    monkeypatch.setattr(methods, "BLOCK", 1000)
    m = MergerConf(method=method, coefficient=[0.3, 0.9], shard_size="30KB", **extra)
    rec = merge_models(trio, m, tmp_path)
    ref = _reference(trio, method, m)
    got = load_dir(tmp_path)
    assert got.keys() == ref.keys() and rec["shards"] > 1
    for name, t in ref.items():
        assert torch.equal(got[name], t), name


def test_output_is_a_loadable_hf_model(trio, tmp_path):
    from transformers import MistralForCausalLM

    merge_models(trio, MergerConf(coefficient=0.5, shard_size="30KB"), tmp_path)
    index = json.loads((tmp_path / io.INDEX).read_text())
    assert set(index["weight_map"].values()) == {p.name for p in tmp_path.glob("*.safetensors")}
    assert (tmp_path / "tokenizer_config.json").is_file()
    assert (tmp_path / "generation_config.json").is_file()
    model = MistralForCausalLM.from_pretrained(tmp_path)
    ins, base, coarse = (load_dir(trio[r]) for r in ("instruct", "base", "coarse"))
    sd = model.state_dict()
    for name in ins:
        assert torch.allclose(sd[name], ins[name] + 0.5 * (coarse[name] - base[name]), atol=1e-7)


def test_single_shard_has_no_index(trio, tmp_path):
    merge_models(trio, MergerConf(coefficient=0.5), tmp_path)
    assert [p.name for p in tmp_path.glob("*.safetensors")] == ["model.safetensors"]
    assert not (tmp_path / io.INDEX).exists()


def test_bf16_output_survival_is_counted(tmp_path):
    """A tiny residue mostly vanishes when instruct + residue is cast to bf16."""
    root = tmp_path / "m"
    dirs = build_trio(root, scale=0.02)
    small = load_dir(dirs["base"])
    g = torch.Generator().manual_seed(5)
    coarse = {k: v + 1e-6 * torch.randn(v.shape, generator=g) for k, v in small.items()}
    shutil.rmtree(dirs["coarse"])
    Path(dirs["coarse"]).mkdir()
    shutil.copy(root / "base" / "config.json", dirs["coarse"])
    save_file(coarse, Path(dirs["coarse"]) / "model.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    rec = merge_models(dirs, MergerConf(coefficient=1.0, out_dtype="bfloat16"), out)
    ins = load_dir(dirs["instruct"])
    changed = kept = 0
    for k in ins:
        r = coarse[k] - small[k]
        changed += int(((ins[k] + r).bfloat16() != ins[k].bfloat16()).sum())
        kept += int(r.count_nonzero())
    assert rec["residue"]["survival"] == pytest.approx(changed / kept, abs=1e-3)
    assert rec["residue"]["survival"] < 0.2
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert all(f.get_slice(k).get_dtype() == "BF16" for k in f.keys())  # noqa: SIM118


def test_private_memory_stays_far_below_tensor_size(tmp_path):
    """One 64 MB tensor per input is merged with a few MB of private memory (RssAnon sampled
    every millisecond); holding whole tensors would add >= 64 MB."""
    import threading

    n = 16 * 2**20
    g = torch.Generator().manual_seed(0)
    base = torch.randn(n, generator=g)
    cfg = {**TINY, "num_hidden_layers": 1}
    for role, t in (("base", base), ("instruct", base + 0.01), ("coarse", base - 0.02)):
        (tmp_path / role).mkdir()
        (tmp_path / role / "config.json").write_text(json.dumps(cfg))
        save_file({"model.layers.0.w": t}, tmp_path / role / "model.safetensors")
    del base, t
    out = tmp_path / "out"
    out.mkdir()
    start, peak, done = io.rss_anon_kb(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], io.rss_anon_kb())
            done.wait(0.001)

    th = threading.Thread(target=sample)
    th.start()
    try:
        merge_models({r: str(tmp_path / r) for r in ROLES}, MergerConf(coefficient=0.5), out)
    finally:
        done.set()
        th.join()
    assert (peak[0] - start) / 1024 < 24, f"private memory grew {(peak[0] - start) / 1024} MB"
    got = io.ModelDir(out, "out").flat("model.layers.0.w")
    ins = io.ModelDir(tmp_path / "instruct", "x").flat("model.layers.0.w")
    assert torch.allclose(got[-1000:], ins[-1000:] - 0.5 * 0.02, atol=1e-6)


@pytest.mark.parametrize("background", [True, False])
def test_shard_writer_threaded_equals_direct_and_reuses_buffers(tmp_path, background):
    """The writer thread writes what arrived, in order, also when the caller reuses its buffer
    (not `owned`: copied) or hands over tensors (`owned`: written from them)."""
    blocks = [torch.randn(1000) for _ in range(12)]
    entries = [(f"t{i}", torch.float32, (1000,)) for i in range(12)]
    w = io.ShardWriter(tmp_path / "x.safetensors", entries, background=background)
    scratch = torch.empty(1000)
    for i, b in enumerate(blocks):
        if i % 2:
            w.write(b, owned=True)
        else:
            scratch.copy_(b)
            w.write(scratch)  # overwritten by the next even block: the writer copied it
    w.close()
    back = load_file(tmp_path / "x.safetensors")
    for i, b in enumerate(blocks):
        assert torch.equal(back[f"t{i}"], b)
    _, raw = io.read_header(tmp_path / "x.safetensors", "k")
    assert (tmp_path / "x.safetensors").stat().st_size == 8 + len(raw) + 12 * 4000  # reserved


def test_shard_writer_thread_errors_reach_the_caller(tmp_path):
    w = io.ShardWriter(tmp_path / "x.safetensors", [("a", torch.float32, (8,))])

    def full_disk(data):
        raise OSError(28, "No space left on device")

    w._fh.write = full_disk  # the next write syscall fails (in the writer thread)
    w.write(torch.zeros(4))  # returns at once: the thread fails later
    with pytest.raises(OSError, match="No space"):
        w.close()  # (or the next write, had there been one after the failure)
    w2 = io.ShardWriter(tmp_path / "y.safetensors", [("a", torch.float32, (8,))])
    w2.write(torch.zeros(4))
    w2.abort()  # after an error elsewhere: stops the thread, no byte-count check
    assert w2._q is None and w2._fh.closed
