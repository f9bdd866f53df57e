"""The critic V_phi and the policy+critic module PPO trains (docs/method.md §2.1).

The critic is a sequence-classification model (num_labels=1) read per token: backbone hidden
states -> its `score` head -> one value per position. By default it starts from the reward
model (values start on the reward's scale, as in Ziegler et al. 2019 and TRL); `critic_init=base`
starts from the base model with a fresh, zero-initialised head.

Policy and critic live in one `nn.Module` so that one optimizer (two parameter groups with their
own learning rates) and one DeepSpeed engine train both: DeepSpeed wraps one module and one
optimizer per engine.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from c2f_exp.coarse.config import CoarseConf, DistributedConf

log = logging.getLogger(__name__)


class Critic(nn.Module):
    """Per-token values from a `*ForSequenceClassification` model with a `score` head."""

    def __init__(self, seq_cls_model: nn.Module):
        super().__init__()
        self.model = seq_cls_model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        n_last: int,
    ) -> torch.Tensor:
        """Values of the last `n_last` positions.

        Args:
            input_ids, attention_mask, position_ids: (B, L).
            n_last: how many trailing positions to return.
        Returns:
            (B, n_last) float32 values.
        """
        backbone = getattr(self.model, self.model.base_model_prefix)
        hidden = backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        ).last_hidden_state
        return self.model.score(hidden[:, -n_last:]).squeeze(-1).float()


class ActorCritic(nn.Module):
    """Policy (causal LM) and critic trained together by PPO.

    `forward` returns what the PPO losses need for a batch of prompt+response sequences whose
    last `n_resp` positions are the response: the policy's logits that *predict* each response
    token (positions P-1 .. P+T-2) and the critic's value of the state before it, V(s_t).
    """

    def __init__(self, policy: nn.Module, critic: Critic):
        super().__init__()
        self.policy = policy
        self.critic = critic

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        n_resp: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: (B, P + T) tensors, n_resp = T. Returns logits (B, T, V) and values (B, T)."""
        kw = {"position_ids": position_ids, "use_cache": False}
        out = self.policy(
            input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=n_resp + 1, **kw
        )
        values = self.critic(
            input_ids[:, :-1], attention_mask[:, :-1], position_ids[:, :-1], n_resp
        )
        return out.logits[:, :-1], values


def load_critic(
    init: str,
    reward_dir: str,
    base_dir: str,
    dtype: torch.dtype,
    gradient_checkpointing: bool = False,
) -> Critic:
    """Build the critic from the reward model (`init=reward`) or the base model (`init=base`)."""
    from transformers import AutoModelForSequenceClassification

    src = reward_dir if init == "reward" else base_dir
    model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=1, dtype=dtype)
    if init == "base":
        nn.init.zeros_(model.score.weight)  # a fresh head: values start at 0, not at noise
        if getattr(model.score, "bias", None) is not None:
            nn.init.zeros_(model.score.bias)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = 0
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    log.info("critic initialised from %s (%s)", init, src)
    return Critic(model)


def load_policy(base_dir: str, dtype: torch.dtype, gradient_checkpointing: bool) -> nn.Module:
    """The trainable policy, a copy of the base model."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def load_frozen(path: str, kind: str, dtype: torch.dtype) -> nn.Module:
    """A frozen model in eval mode: `kind` = causal (reference) or seq_cls (reward)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForCausalLM if kind == "causal" else AutoModelForSequenceClassification
    model = cls.from_pretrained(path, dtype=dtype)
    model.requires_grad_(False)
    return model.eval()


def build_models(
    acc: Any, base: str, rm_ref: str, c: CoarseConf
) -> tuple[ActorCritic, Any, Any, Any]:
    """Policy+critic (trainable), frozen reference (= base) and frozen reward model + tokenizer.

    Under ZeRO-3 the frozen models are sharded too (TRL's `prepare_deepspeed`); otherwise they
    are replicated on each process's device.
    """
    from c2f_exp.reward.model import load_reward_model

    dtype = getattr(torch, c.dtype)
    gc = c.gradient_checkpointing
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    # Trainable weights: in bf16/fp16 without DeepSpeed, fp32 master weights under autocast
    # (build_accelerator's mixed_precision), as transformers' Trainer does: AdamW steps on
    # bf16 weights round most updates at lr 1e-6 away. DeepSpeed keeps its own fp32 master copy.
    train_dtype = dtype if plugin is not None else torch.float32
    model = ActorCritic(
        load_policy(base, train_dtype, gc),
        load_critic(c.critic_init, rm_ref, base, train_dtype, gc),
    )
    ref = load_frozen(base, "causal", dtype)
    rm, rm_tok = load_reward_model(rm_ref, dtype)
    if plugin is not None and plugin.zero_stage == 3:
        from trl.models.utils import prepare_deepspeed

        return model, prepare_deepspeed(ref, acc), prepare_deepspeed(rm, acc), rm_tok
    return model, ref.to(acc.device), rm.to(acc.device), rm_tok


def build_optimizer(model: ActorCritic, c: CoarseConf) -> torch.optim.Optimizer:
    """AdamW with one parameter group for the policy and one for the critic (own lr each)."""
    groups = [
        {"params": [p for p in part.parameters() if p.requires_grad], "lr": lr}
        for part, lr in ((model.policy, c.lr), (model.critic, c.critic_lr))
    ]
    return torch.optim.AdamW(groups, eps=c.adam_eps, weight_decay=0.0)


def build_accelerator(d: DistributedConf | None, c: Any) -> Any:
    """An `Accelerator` for `distributed` config `d` (None: plain) and coarse config `c`.

    Under `accelerate launch --use_deepspeed --zero_stage N` the launcher's stage must match
    `distributed.zero_stage`; the DeepSpeed config is ours (json + the PPO batch sizes), so one
    command line and one config file never disagree silently.
    """
    import os

    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

    from c2f_exp.core.errors import C2FError, bad_value

    launched = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    backend = d.backend if d is not None else "none"
    if backend != "deepspeed":
        if launched:
            want = "zero2 or zero3 under `accelerate launch --use_deepspeed`"
            raise bad_value("distributed", getattr(d, "name", None), want, "distributed=zero2")
        from accelerate.state import AcceleratorState

        mixed = {"bfloat16": "bf16", "float16": "fp16"}.get(str(c.dtype), "no")
        state = AcceleratorState._shared_state
        if state and str(state.get("_mixed_precision", mixed)) != mixed:  # an earlier trainer's
            AcceleratorState._reset_state()  # keep its process group, not its precision
        return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mixed)
    env_stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    if launched and env_stage is not None and int(env_stage) != d.zero_stage:
        want, fix = f"the launcher's --zero_stage ({env_stage})", "pass the same stage to both"
        raise bad_value("distributed.zero_stage", d.zero_stage, want, fix)
    ds: dict[str, Any] = {"zero_optimization": {}}
    if d.deepspeed_config:
        path = Path(d.deepspeed_config)
        if not path.is_absolute():
            from c2f_exp.core.layout import conf_dir

            path = conf_dir() / "distributed" / path  # the checkout's conf/ or the wheel's
        ds = json.loads(path.read_text())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ds["zero_optimization"]["stage"] = d.zero_stage
    ds.update(train_micro_batch_size_per_gpu=max(1, c.minibatch_size // world))
    ds.update(gradient_accumulation_steps=1, gradient_clipping=c.max_grad_norm)
    ds.pop("train_batch_size", None)
    ds["bf16"] = {"enabled": c.dtype == "bfloat16"}
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state:  # an earlier stage's HF/TRL Trainer made an Accelerator
        AcceleratorState._reset_state()  # in this process: keep its process group, not its plugin
    fields = os.environ.pop("ACCELERATE_CONFIG_DS_FIELDS", None)  # ours win over launcher's
    try:
        plugin = DeepSpeedPlugin(hf_ds_config=ds)
    finally:
        if fields is not None:
            os.environ["ACCELERATE_CONFIG_DS_FIELDS"] = fields
    # On CPU: cpu=True would silently drop DeepSpeed, and without an explicit gloo backend
    # accelerate 1.15 reports num_processes=1 on every rank (its backend stays None).
    handlers = [] if torch.cuda.is_available() else [InitProcessGroupKwargs(backend="gloo")]
    acc = Accelerator(deepspeed_plugin=plugin, kwargs_handlers=handlers)
    if acc.num_processes != world:  # the process group was made earlier, without gloo (CPU)
        fix = "run the stages before coarse in a separate command (they are then reused)"
        raise C2FError(f"accelerate sees {acc.num_processes} of {world} processes; {fix}")
    return acc
