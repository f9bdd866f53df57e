"""A reward model with its own architecture (`reward.arch`), grown from the init model.

Same width as the init model (hidden, FFN, heads): the init model's embeddings and first layers
are copied and every extra layer starts as the identity (its attention output and FFN down
projections are zero, so the residual stream passes through unchanged: function-preserving
growth, as Net2Net / Gong et al. 2019 stack layers), so the deeper model starts with all of the
base's knowledge. Another width cannot be copied: the model starts from scratch.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)
_SAME = (
    ("hidden_size", "hidden_size"),
    ("intermediate_size", "intermediate_size"),
    ("num_heads", "num_attention_heads"),
    ("num_kv_heads", "num_key_value_heads"),
)


def grow(init: nn.Module, over: dict[str, int], seed: int) -> nn.Module:
    """A `*ForSequenceClassification` like `init` (num_labels 1) with the architecture fields
    `over` (RewardArchConf names, e.g. {"num_layers": 6}) changed. Returns a new model; `init`
    is not changed."""
    conf = init.config.__class__.from_dict(init.config.to_dict())
    conf.num_hidden_layers = over.get("num_layers", conf.num_hidden_layers)
    conf.max_position_embeddings = over.get(
        "max_position_embeddings", conf.max_position_embeddings
    )
    same = all(over.get(a, getattr(conf, b)) == getattr(conf, b) for a, b in _SAME)
    if not same:
        for a, b in _SAME:
            setattr(conf, b, over.get(a, getattr(conf, b)))
        conf.head_dim = conf.hidden_size // conf.num_attention_heads
    torch.manual_seed(seed)
    model = init.__class__(conf)
    if not same:
        log.warning("reward.arch differs in width from the init model: trained from scratch")
        return model
    missing, _ = model.load_state_dict(init.state_dict(), strict=False)
    n_init = init.config.num_hidden_layers
    for layer in getattr(model, model.base_model_prefix).layers[n_init:]:
        nn.init.zeros_(layer.self_attn.o_proj.weight)
        nn.init.zeros_(layer.mlp.down_proj.weight)
    log.info(
        "reward model grown %d -> %d layers (%d new tensors, identity-initialised)",
        n_init,
        conf.num_hidden_layers,
        len(missing),
    )
    return model
