"""The rehearsal's models: the configured hub models' classes at tiny widths (issue 22).

`debug=micro` on hub models (`model.rehearsal` set) makes `prepare` build `base/` and
`instruct/` from each model's own `config.json` (same class, vocabulary, RoPE, sliding window,
dtype) with the widths of `model.rehearsal`, random weights, and the model's own tokenizer and
chat template. No weights are read, so a GPU node rehearses a 7B recipe in minutes before the
real run, and CI rehearses it with the real Mistral tokenizer. The instruct copy is the base
copy plus a small perturbation, so the merge sees a residue and an instruct delta.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
WIDTHS = {  # RehearsalConf field -> config.json field
    "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
}


def shrunk_config(ref: str, r: Any) -> Any:
    """`AutoConfig` of `ref` with the rehearsal's widths (head_dim follows hidden / heads)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(ref)
    for ours, theirs in WIDTHS.items():
        if hasattr(cfg, theirs):
            setattr(cfg, theirs, int(getattr(r, ours)))
    if getattr(cfg, "head_dim", None) is not None:
        cfg.head_dim = int(r.hidden_size) // int(r.num_heads)
    return cfg


def build(refs: dict[str, str], r: Any, dtype: Any, seed: int, out_dirs: dict[str, Path]) -> dict:
    """Write the tiny-width base and instruct to `out_dirs[role]`; returns their sizes."""
    import torch
    from transformers import AutoModelForCausalLM

    from c2f_exp.core.tokenizers import load_tokenizer, save_tokenizer

    torch.manual_seed(seed)
    base_cfg = shrunk_config(refs["base"], r)
    base = AutoModelForCausalLM.from_config(base_cfg, dtype=torch.float32)
    out: dict[str, Any] = {}
    for role in ("base", "instruct"):
        model = base
        if role == "instruct":
            cfg = shrunk_config(refs["instruct"], r)
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
            missing = model.load_state_dict(base.state_dict(), strict=False)
            if missing.missing_keys or missing.unexpected_keys:
                from c2f_exp.core.errors import ConfigError

                raise ConfigError(
                    f"model.instruct.path={refs['instruct']} is not the same architecture as "
                    f"model.base.path={refs['base']} ({missing}); the merge needs one"
                )
            with torch.no_grad():  # an instruct delta of ~1% of each tensor's scale
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 0.01 * (p.std() if p.numel() > 1 else 1.0))
        model.to(dtype).save_pretrained(out_dirs[role], safe_serialization=True)
        save_tokenizer(load_tokenizer(refs[role]), out_dirs[role])
        out[f"{role}_params"] = sum(p.numel() for p in model.parameters())
        out[f"{role}_class"] = type(model).__name__
    log.info("rehearsal models (tiny widths of %s): %s", refs["base"], out)
    return out
