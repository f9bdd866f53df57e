"""`plan=true`: what a run will cost, before any GPU hour is spent (issue 22 item 6).

Resolves every model (its `config.json`: parameter counts from the configured class built on
the meta device, nothing loaded), data set (rows) and judge, then prints per stage the
parameters, rows, the generated-token budget and the memory per GPU under the chosen
`distributed` setting, and exits without training. Model-state memory comes from DeepSpeed's
own estimators (`estimate_zero3_model_states_mem_needs_all_cold`, zero2's `..._mem_needs`);
rollout KV cache and activations are our estimates, said as such.
"""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from c2f_exp.coarse.config import DistributedConf
    from c2f_exp.config import C2FConfig

log = logging.getLogger(__name__)
GiB = 1024**3
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class ModelSize:
    params: int
    largest_layer: int  # the largest single parameter tensor (DeepSpeed's "largest layer")
    layers: int
    hidden: int
    kv_heads: int
    head_dim: int
    cls: str


def model_size(ref: str) -> ModelSize:
    """Parameter counts of `ref`'s configured class, built on the meta device (no weights)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(ref)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(cfg)
    sizes = [p.numel() for p in model.parameters()]
    heads = cfg.num_attention_heads
    return ModelSize(
        params=sum(sizes),
        largest_layer=max(sizes),
        layers=cfg.num_hidden_layers,
        hidden=cfg.hidden_size,
        kv_heads=getattr(cfg, "num_key_value_heads", heads) or heads,
        head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
        cls=type(model).__name__,
    )


def count_rows(ref: str, split: str) -> int | None:
    """Rows of a local JSONL data set (one file, or `<split>*.jsonl[.gz]` under a directory);
    None where only loading it would tell (a hub id)."""
    p = Path(ref).expanduser()
    files = [p] if p.is_file() else sorted(p.rglob(f"{split}*.jsonl*")) if p.is_dir() else []
    if not files:
        return None
    n = 0
    for f in files:
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rt") as fh:
            n += sum(1 for line in fh if line.strip())
    return n


def model_states_gib(params: int, largest: int, d: DistributedConf, n_gpus: int) -> float:
    """Per-GPU memory of trainable model states (fp32 master + Adam + bf16 weights and
    gradients) under `distributed`, from DeepSpeed's estimators (no offload)."""
    if str(d.backend) == "deepspeed" and d.zero_stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        _, gpu, _ = estimate_zero3_model_states_mem_needs(
            params, largest, num_gpus_per_node=n_gpus, cpu_offload=False
        )
        return gpu / GiB
    if str(d.backend) == "deepspeed" and d.zero_stage in (1, 2):
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        _, gpu = estimate_zero2_model_states_mem_needs(
            params, num_gpus_per_node=n_gpus, cpu_offload=False
        )
        return gpu / GiB
    return 18 * params / GiB  # replicated: the same 18 bytes per parameter on every GPU


def build_plan(cfg: C2FConfig) -> dict[str, Any]:
    """The plan as data (printed by `print_plan`)."""
    from c2f_exp.coarse.schedule_config import max_limit
    from c2f_exp.core import hub
    from c2f_exp.sources import source_for

    d, c, stages = cfg.distributed, cfg.coarse, list(cfg.stages)
    n_gpus = 1 if str(d.backend) == "none" else int(d.num_processes)
    src = source_for(cfg, "model.source")
    if src.builds_models:
        return {"note": "model.source=tinyworld: prepare builds the models; nothing to plan"}
    refs = src.model_refs(cfg)
    sizes = {role: model_size(ref) for role, ref in refs.items()}
    base = sizes["base"]
    wbytes = BYTES.get(str(c.dtype), 4)
    plan: dict[str, Any] = {"distributed": f"{d.name} ({n_gpus} GPU{'s' * (n_gpus > 1)})"}
    plan["models"] = {
        r: {"ref": refs[r], "class": s.cls, "params": s.params} for r, s in sizes.items()
    }
    h = cfg.data.hub
    pref = cfg.reward.dataset or h.preference_dataset
    pref_ref = hub.resolve_dataset(pref, "reward.dataset") if pref else None
    if "reward" in stages and not cfg.reward.path:
        rows = count_rows(pref_ref, cfg.reward.train_split) if pref_ref else None
        cap = cfg.reward.max_train_pairs
        plan["reward"] = {
            "params": base.params,  # the base model with a one-output head
            "train_rows": rows if cap is None or rows is None else min(rows, cap),
            "gpu_gib": round(model_states_gib(base.params, base.largest_layer, d, n_gpus), 1),
        }
    if "coarse" in stages:
        l_max = max_limit(cfg.length_schedule)
        budget = int(c.token_budget) if c.token_budget else int(c.steps * c.batch_size * l_max)
        per_gpu = max(1, c.batch_size // n_gpus)
        prompt_len = 512  # our assumption for HH prompts (reported as such)
        kv = 2 * base.layers * base.kv_heads * base.head_dim * per_gpu * (prompt_len + l_max) * 2
        mb = max(1, c.minibatch_size // n_gpus)
        act = mb * (prompt_len + l_max) * base.hidden * base.layers * 2 * 2  # checkpointed
        trainable = 2 * base.params  # policy + critic
        frozen = 2 * base.params * wbytes / (n_gpus if d.zero_stage == 3 else 1)  # ref + RM
        states = model_states_gib(trainable, base.largest_layer, d, n_gpus)
        plan["coarse"] = {
            "params_trained": trainable,
            "params_frozen": 2 * base.params,
            "generated_tokens_max": budget,
            "gpu_gib": {
                "model_states (DeepSpeed estimator)": round(states, 1),
                "frozen ref + reward model": round(frozen / GiB, 1),
                f"rollout KV cache ({per_gpu} rows x {prompt_len}+{l_max} tokens, bf16)": round(
                    kv / GiB, 1
                ),
                f"activations ({mb} rows, gradient checkpointing; estimate)": round(act / GiB, 1),
            },
        }
        plan["coarse"]["gpu_gib"]["total"] = round(sum(plan["coarse"]["gpu_gib"].values()), 1)
    if "eval" in stages and cfg.eval.mt_bench.enabled:
        m = cfg.eval.mt_bench
        n_models = 4 if "merge" in stages else 3
        j = m.judge
        plan["eval"] = {
            "mt_bench_answer_tokens_max": 80 * 2 * n_models * int(m.max_new_tokens),
            "lm_eval_tasks": list(cfg.eval.lm_eval.tasks),
            "judge": f"{j.type} {j.model or ''} {j.base_url or ''}".strip(),
        }
    return plan


def print_plan(cfg: C2FConfig) -> dict[str, Any]:
    from c2f_exp.core.secrets import redact_text

    plan = build_plan(cfg)
    text = redact_text(json.dumps(plan, indent=2, default=str))
    print(f"plan for {cfg.experiment_name} (nothing trained; numbers: docs/gpus.md#the-plan)")
    print(text)
    return plan
