"""The merge tests' builders: tiny Mistral state dicts and model dirs, the base/instruct/coarse
trio, and the merge stage's config and runner.

Tiny Mistral models (hidden 32, 2 layers) are perturbed with seeded noise: base, instruct = base
+ noise, coarse = base + other noise (coarse saved in several shards). The `trio` fixture
(tests/conftest.py) builds it once per session.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file

from c2f_exp.core import artifacts
from c2f_exp.core.tracking import Tracker
from c2f_exp.merge import io
from c2f_exp.merge.stage import MergeStage
from c2f_exp.stages import StageContext
from tests.helpers import check, compose_root

ROLES = ("base", "instruct", "coarse")


TINY = {
    "architectures": ["MistralForCausalLM"],
    "model_type": "mistral",
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "dtype": "float32",
}


def tiny_mistral_state(g: torch.Generator) -> dict[str, torch.Tensor]:
    """A tiny Mistral-architecture state dict (TINY's shapes): weights ~N(0, 0.02), norms 1."""
    h, i, v, q, kv = 32, 64, 64, 4 * 8, 2 * 8
    shapes = {
        "model.embed_tokens.weight": (v, h),
        "model.norm.weight": (h,),
        "lm_head.weight": (v, h),
    }
    for n in range(2):
        p = f"model.layers.{n}."
        shapes.update(
            {
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
                p + "self_attn.q_proj.weight": (q, h),
                p + "self_attn.k_proj.weight": (kv, h),
                p + "self_attn.v_proj.weight": (kv, h),
                p + "self_attn.o_proj.weight": (h, q),
                p + "mlp.gate_proj.weight": (i, h),
                p + "mlp.up_proj.weight": (i, h),
                p + "mlp.down_proj.weight": (h, i),
            }
        )
    return {
        k: torch.ones(s) if len(s) == 1 else 0.02 * torch.randn(s, generator=g)
        for k, s in shapes.items()
    }


def save_model(sd: dict[str, torch.Tensor], path: Path, shards: int = 1) -> None:
    """A Hugging Face-style model dir: config.json + safetensors (with an index if sharded)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(TINY))
    (path / "generation_config.json").write_text('{"max_new_tokens": 8}')
    if shards == 1:
        save_file(sd, path / "model.safetensors")
        return
    names = sorted(sd)
    wmap = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: sd[n] for n in names[s::shards]}
        save_file(part, path / fname)
        wmap.update(dict.fromkeys(part, fname))
    (path / io.INDEX).write_text(json.dumps({"metadata": {}, "weight_map": wmap}))


def build_trio(root: Path, scale: float = 0.02) -> dict[str, str]:
    """Save base/instruct/coarse under `root`: instruct and coarse are base plus independent
    seeded noise of std `scale`; coarse is saved in 3 shards. Returns role -> dir."""
    base = tiny_mistral_state(torch.Generator().manual_seed(0))
    save_model(base, root / "base")
    for seed, role in ((1, "instruct"), (2, "coarse")):
        g = torch.Generator().manual_seed(seed)
        sd = {k: v + scale * torch.randn(v.shape, generator=g) for k, v in base.items()}
        save_model(sd, root / role, shards=3 if role == "coarse" else 1)
    (root / "instruct" / "tokenizer_config.json").write_text(
        '{"model_max_length": 64, "eos_token": "</s>", "chat_template": "{{ messages }}"}'
    )
    return {r: str(root / r) for r in ROLES}


def load_dir(path) -> dict[str, torch.Tensor]:
    md = io.ModelDir(path, "test")
    return {n: md.flat(n).reshape(md.tensors[n].shape).clone() for n in md.tensors}


def make_cfg(stages=("merge",), root=None, **merger):
    """The typed root config (`check`: what the pipeline hands the stages) of a run with these
    `stages` and `merger` values; `root` (a dict) is merged at the top, e.g. `paths`."""
    cfg = compose_root([f"stages=[{','.join(stages)}]"])
    cfg = OmegaConf.merge(cfg, root or {}, {"merger": merger})
    return check(cfg)


def run_stage(cfg, tmp: Path, upstream=None):
    """preflight, then run into an atomic artifact dir the way pipeline._run_stage does.
    `cfg`: the typed config (`make_cfg`); a DictConfig is checked first, as the pipeline does."""
    if isinstance(cfg, DictConfig):
        cfg = check(cfg)
    stage = MergeStage()
    stage.preflight(cfg)
    tracker = Tracker(OmegaConf.create({"backend": "none", "mode": "disabled"}), tmp, {}, "g", "n")
    tracker.stage("merge", tmp / "run" / "merge")
    art = tmp / "cache" / "merge" / "k"
    ctx = StageContext(
        cfg, tmp / "run", tmp / "run" / "merge", tmp / "work", tracker, upstream or {}
    )
    with artifacts.atomic_dir(art) as out:
        metrics = stage.run(ctx, out)
    return art, metrics
