"""Benchmark: streaming Knowledge Residue Merger vs mergekit `task_arithmetic` vs the I/O floor.

    .venv/bin/python tests/benchmarks/merge.py            # 3 x ~405M-param fp32, 200 MB shards
    .venv/bin/python tests/benchmarks/merge.py --small    # 3 x ~26M params, 20 MB shards

Builds three Mistral-architecture checkpoints (base; instruct and coarse = base + seeded noise)
under a temp dir in /tmp, then runs, each twice and interleaved, in fresh subprocesses:

* floor: read every input byte (8 MiB `readinto`) and write the output's bytes;
* floor_mmap: the same through memory maps (touch every input byte, write the instruct bytes);
* ours: `c2f_exp.merge.stream.merge_models` (knowledge_residue, lambda 0.3, no filter);
* mergekit: `mergekit-yaml` task_arithmetic with {instruct: 1, coarse: 0.3} over base.

Wall times exclude our worker's imports (timed separately); mergekit's CLI wall time includes
its imports, so its import time is measured too and reported beside it. Peak private memory is
RssAnon of the worker process, sampled every 10 ms from /proc/<pid>/status. Inputs are in the
page cache (the floor warms it); `sync` runs between timed runs so writeback of one run does not
land in the next. Prints ratios to the faster floor measured in this same run, and ours against
the mmap floor (goal <= 1.2x). Deletes its files. `--reps N` runs every kind N times (default 2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
LAMBDA = 0.3
FULL = dict(vocab=32000, hidden=1024, inter=3584, layers=25, heads=16, kv=4, shard=200_000_000)
SMALL = dict(vocab=8000, hidden=512, inter=1536, layers=6, heads=8, kv=2, shard=20_000_000)


def shapes(a: dict) -> dict[str, tuple[int, ...]]:
    h, hd = a["hidden"], a["hidden"] // a["heads"]
    s = {"model.embed_tokens.weight": (a["vocab"], h)}
    for i in range(a["layers"]):
        p = f"model.layers.{i}."
        s.update(
            {
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
                p + "self_attn.q_proj.weight": (a["heads"] * hd, h),
                p + "self_attn.k_proj.weight": (a["kv"] * hd, h),
                p + "self_attn.v_proj.weight": (a["kv"] * hd, h),
                p + "self_attn.o_proj.weight": (h, a["heads"] * hd),
                p + "mlp.gate_proj.weight": (a["inter"], h),
                p + "mlp.up_proj.weight": (a["inter"], h),
                p + "mlp.down_proj.weight": (h, a["inter"]),
            }
        )
    s.update({"model.norm.weight": (h,), "lm_head.weight": (a["vocab"], h)})
    return s


def build(root: Path, a: dict) -> dict[str, str]:
    """Write base/instruct/coarse in shards of at most a['shard'] bytes (save_file + index)."""
    import torch
    from safetensors.torch import save_file

    cfg = {
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        "vocab_size": a["vocab"],
        "hidden_size": a["hidden"],
        "intermediate_size": a["inter"],
        "num_hidden_layers": a["layers"],
        "num_attention_heads": a["heads"],
        "num_key_value_heads": a["kv"],
        "head_dim": a["hidden"] // a["heads"],
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "dtype": "float32",
    }
    groups, size = [[]], 0
    for name, shp in shapes(a).items():
        n = math.prod(shp) * 4
        if groups[-1] and size + n > a["shard"]:
            groups.append([])
            size = 0
        groups[-1].append((name, shp))
        size += n
    gens = {r: torch.Generator().manual_seed(i) for i, r in enumerate(("base", "ins", "coarse"))}
    dirs = {r: root / r for r in ("base", "instruct", "coarse")}
    for d in dirs.values():
        d.mkdir()
        (d / "config.json").write_text(json.dumps(cfg))
    wmap = {}
    for k, group in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        parts: dict[str, dict] = {r: {} for r in dirs}
        for name, shp in group:
            base = torch.randn(shp, generator=gens["base"]).mul_(0.02)
            if len(shp) == 1:
                base.fill_(1.0)
            parts["base"][name] = base
            parts["instruct"][name] = base + 0.002 * torch.randn(shp, generator=gens["ins"])
            parts["coarse"][name] = base + 0.002 * torch.randn(shp, generator=gens["coarse"])
            wmap[name] = fname
        for r, d in dirs.items():
            save_file(parts[r], d / fname, metadata={"format": "pt"})
        del parts
    for d in dirs.values():
        (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wmap}))
    return {r: str(d) for r, d in dirs.items()}


# ---- workers (run in fresh subprocesses) -------------------------------------------------


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def worker_floor(dirs: dict[str, str], out: str, shard: int) -> dict:
    buf = bytearray(8 << 20)
    mv = memoryview(buf)
    t0, c0 = time.perf_counter(), _cpu()
    Path(out).mkdir()
    for role in ("base", "coarse", "instruct"):
        for f in sorted(Path(dirs[role]).glob("*.safetensors")):
            dst = open(Path(out) / f.name, "wb") if role == "instruct" else None  # noqa: SIM115
            with open(f, "rb", buffering=0) as fh:
                while n := fh.readinto(buf):
                    if dst:
                        dst.write(mv[:n])
            if dst:
                dst.close()
    return {"seconds": time.perf_counter() - t0, "cpu_s": _cpu() - c0}


def worker_floor_mmap(dirs: dict[str, str], out: str, shard: int) -> dict:
    """The same bytes through memory maps (as safe_open gives them): touch every input byte
    (a sum per 1 MiB block) and write the instruct bytes out. Cheaper than read() here."""
    import torch
    from safetensors import safe_open

    torch.set_num_threads(1)
    blk = 1 << 18
    t0, c0 = time.perf_counter(), _cpu()
    Path(out).mkdir()
    acc = 0.0
    for role in ("base", "coarse", "instruct"):
        for f in sorted(Path(dirs[role]).glob("*.safetensors")):
            h = safe_open(str(f), "pt")
            dst = open(Path(out) / f.name, "wb") if role == "instruct" else None  # noqa: SIM115
            for k in h.keys():  # noqa: SIM118 (safe_open is not a dict)
                t = h.get_tensor(k).reshape(-1)
                for i in range(0, t.numel(), blk):
                    b = t[i : i + blk]
                    acc += float(b.sum())
                    if dst:
                        dst.write(b.view(torch.uint8).numpy())
            if dst:
                dst.close()
    return {"seconds": time.perf_counter() - t0, "cpu_s": _cpu() - c0, "checksum": acc}


def worker_ours(dirs: dict[str, str], out: str, shard: int) -> dict:
    t0 = time.perf_counter()
    from c2f_exp.merge.config import MergerConf
    from c2f_exp.merge.io import rss_anon_kb
    from c2f_exp.merge.stream import merge_models

    imp, base_kb = time.perf_counter() - t0, rss_anon_kb()
    Path(out).mkdir()
    t0, c0 = time.perf_counter(), _cpu()
    rec = merge_models(dirs, MergerConf(coefficient=LAMBDA, shard_size=shard), Path(out))
    return {
        "seconds": time.perf_counter() - t0,
        "cpu_s": _cpu() - c0,
        "import_s": imp,
        "rss_after_import_kb": base_kb,
        "survival": rec["residue"]["survival"],
        "shards": rec["shards"],
    }


def run_worker(kind: str, dirs: dict[str, str], out: Path, shard: int) -> dict:
    """Run one timed merge in a subprocess; sample its RssAnon every 10 ms."""
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(["sync"], check=False)
    if kind == "mergekit":
        cfg = out.with_suffix(".yaml")
        cfg.write_text(
            json.dumps(
                {
                    "merge_method": "task_arithmetic",
                    "base_model": dirs["base"],
                    "dtype": "float32",
                    "models": [
                        {"model": dirs["instruct"], "parameters": {"weight": 1.0}},
                        {"model": dirs["coarse"], "parameters": {"weight": LAMBDA}},
                    ],
                }
            )
        )
        cmd = [
            str(Path(PY).with_name("mergekit-yaml")),
            str(cfg),
            str(out),
            "--quiet",
            "--no-copy-tokenizer",
            "--no-write-model-card",
            "--out-shard-size",
            str(shard // 4),  # parameters (fp32)
        ]
    else:
        cmd = [PY, __file__, "--worker", kind, "--dirs", json.dumps(dirs), "--out", str(out)]
        cmd += ["--shard", str(shard)]
    t0, c0 = time.perf_counter(), _children_cpu()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = [0]

    def sample():
        while proc.poll() is None:
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("RssAnon:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.01)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    th.join()
    if proc.returncode:
        raise SystemExit(f"{kind} failed:\n{stderr[-3000:]}")
    res = json.loads(stdout.strip().splitlines()[-1]) if kind != "mergekit" else {}
    res.setdefault("seconds", wall)
    res.setdefault("cpu_s", _children_cpu() - c0)  # mergekit: whole process, imports included
    res.update({"wall_s": wall, "peak_rss_anon_mb": peak[0] / 1024})
    return res


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def import_time(module: str) -> tuple[float, float]:
    """(wall, CPU) seconds of `import module` in a fresh interpreter (CPU includes startup)."""
    code = f"import time; t=time.perf_counter(); import {module}; print(time.perf_counter()-t)"
    c0 = _children_cpu()
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=ROOT)
    return float(out.stdout.strip()), _children_cpu() - c0


def check_equal(a: str, b: str) -> float:
    from c2f_exp.merge.io import ModelDir

    x, y = ModelDir(a, "ours"), ModelDir(b, "mergekit")
    assert x.tensors.keys() == y.tensors.keys()
    return max(float((x.flat(n) - y.flat(n)).abs().max()) for n in x.tensors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="~26M params, 20 MB shards")
    ap.add_argument("--worker", choices=["floor", "floor_mmap", "ours"])
    ap.add_argument("--dirs")
    ap.add_argument("--out")
    ap.add_argument("--shard", type=int, default=FULL["shard"])
    ap.add_argument("--tmp", default="/tmp", help="where the checkpoints are written")
    ap.add_argument("--reps", type=int, default=2, help="timed runs of each kind, interleaved")
    args = ap.parse_args()
    if args.worker:
        fn = {"floor": worker_floor, "floor_mmap": worker_floor_mmap, "ours": worker_ours}[
            args.worker
        ]
        print(json.dumps(fn(json.loads(args.dirs), args.out, args.shard)))
        return
    a = SMALL if args.small else FULL
    root = Path(tempfile.mkdtemp(prefix="c2f_merge_bench_", dir=args.tmp))
    try:
        t0 = time.perf_counter()
        dirs = build(root, a)
        n_params = sum(math.prod(s) for s in shapes(a).values())
        in_bytes = sum(f.stat().st_size for d in dirs.values() for f in Path(d).glob("*.safet*"))
        print(
            f"built 3 x {n_params / 1e6:.1f}M params ({in_bytes / 1e9:.2f} GB of inputs, "
            f"shards <= {a['shard'] / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s"
        )
        runs: dict[str, list[dict]] = {"floor": [], "floor_mmap": [], "ours": [], "mergekit": []}
        for _ in range(args.reps):
            for kind in runs:
                runs[kind].append(run_worker(kind, dirs, root / f"out_{kind}", a["shard"]))
        err = check_equal(str(root / "out_ours"), str(root / "out_mergekit"))
        report(runs, a, err)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(runs: dict[str, list[dict]], a: dict, err: float) -> None:
    """Ratios are to the faster of the two floors (per column), measured in this run."""
    imp_ours = runs["ours"][0]["import_s"]
    imp_mk, imp_mk_cpu = import_time("mergekit.merge")
    best = {k: min(r["seconds"] for r in rs) for k, rs in runs.items()}
    cpu = {k: min(r["cpu_s"] for r in rs) for k, rs in runs.items()}
    cpu["mergekit"] -= imp_mk_cpu  # its CLI process includes interpreter start-up and imports
    floor, cfloor = min(best["floor"], best["floor_mmap"]), min(cpu["floor"], cpu["floor_mmap"])
    head = f"{'run':<11}{'wall times (s)':>17}{'best':>7}{'x floor':>8}"
    print(f"\n{head}{'CPU s':>7}{'x floor':>8}{'peak RssAnon MB':>17}")
    for kind, rs in runs.items():
        ts = ", ".join(f"{r['seconds']:.2f}" for r in rs)
        peak = max(r["peak_rss_anon_mb"] for r in rs)
        print(
            f"{kind:<11}{ts:>17}{best[kind]:>7.2f}{best[kind] / floor:>8.2f}"
            f"{cpu[kind]:>7.2f}{cpu[kind] / cfloor:>8.2f}{peak:>17.0f}"
        )
    mk, ours = best["mergekit"], best["ours"]
    print(
        f"\nimports, not in the times above (except mergekit's, whose CLI wall time includes "
        f"them; its CPU column has them subtracted): ours {imp_ours:.1f} s (torch + "
        f"c2f_exp.merge), mergekit.merge {imp_mk:.1f} s wall / {imp_mk_cpu:.1f} s CPU"
    )
    mk_net = mk - imp_mk
    print(
        f"mergekit wall minus its import: ~{mk_net:.1f} s = {mk_net / floor:.1f} x floor;"
        f" ours is {mk_net / ours:.1f}x faster than mergekit without its import"
    )
    after = runs["ours"][0]["rss_after_import_kb"] / 1024
    peak = max(r["peak_rss_anon_mb"] for r in runs["ours"])
    print(
        f"ours: RssAnon {after:.0f} MB after imports, peak {peak:.0f} MB "
        f"(+{peak - after:.0f} MB for the merge; one shard = {a['shard'] / 1e6:.0f} MB, "
        f"goal <= 4 shards = {4 * a['shard'] / 1e6:.0f} MB)"
    )
    mm = best["floor_mmap"]
    for what, r in (("wall", ours / mm), ("CPU", cpu["ours"] / cpu["floor_mmap"])):
        ok = "met" if r <= 1.2 else "NOT met"
        print(f"goal ours <= 1.2 x the mmap floor ({what}): {r:.2f} x -> {ok}")
    print(f"ours / read() floor (wall): {ours / best['floor']:.2f} x")
    print(
        f"max |ours - mergekit| = {err:.2e}; residue survival "
        f"{runs['ours'][0]['survival']:.4f}; output shards {runs['ours'][0]['shards']}"
    )
    print(f"(2 shared CPU cores, load average {os.getloadavg()[0]:.1f}: expect noisy timings)")


if __name__ == "__main__":
    main()
