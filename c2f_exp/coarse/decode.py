"""A lean KV-cache decode step for Llama-family causal LMs (Mistral, Llama, Qwen2).

`rollout.generate` spends most of its time in per-token Python overhead when it calls the
model's full `forward` once per new token (mask building, cache objects, output classes): on
the tiny world ~2.5 ms per step for ~0.3 ms of arithmetic. `LeanDecoder` runs the same layers
(the model's own embedding, norms, projections, MLPs, rotary embedding and its
`apply_rotary_pos_emb`) with the key/value cache and the attention mask in buffers allocated
once per rollout, and SDPA called directly, as the model's SDPA path does (one-token queries
packed per key/value head instead of repeating keys; prompts with `repeat_kv`).

Models of other families, or a rollout longer than a Mistral sliding window, use the plain
loop (`supports` is False).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

FAMILIES = ("mistral", "llama", "qwen2")
_LAYER_PARTS = ("input_layernorm", "post_attention_layernorm", "mlp", "self_attn")
_ATTN_PARTS = ("q_proj", "k_proj", "v_proj", "o_proj", "scaling")


def supports(model, total_len: int) -> bool:
    """True if `model` is a Llama-family causal LM this decoder reproduces for `total_len`."""
    cfg, inner = getattr(model, "config", None), getattr(model, "model", None)
    if getattr(cfg, "model_type", None) not in FAMILIES or inner is None:
        return False
    if not all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return False
    if not hasattr(model, "lm_head") or getattr(cfg, "_attn_implementation", "sdpa") == "flex":
        return False
    window = getattr(cfg, "sliding_window", None)
    if window is not None and getattr(cfg, "use_sliding_window", True) and total_len > window:
        return False
    layers = list(inner.layers)
    return all(
        all(hasattr(ly, p) for p in _LAYER_PARTS)
        and all(hasattr(ly.self_attn, p) for p in _ATTN_PARTS)
        for ly in layers
    )


class LeanDecoder:
    """Prefill a left-padded prompt batch, then decode one token per row per `step`.

    Args:
        model: a causal LM for which `supports(model, P + limit)` is True (eval mode).
        prompt_ids, prompt_mask: (B, P) left-padded prompts.
        limit: the most tokens `step` will be called for.
    """

    def __init__(self, model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, limit: int):
        self.model, inner = model, model.model
        self.layers, cfg = list(inner.layers), model.config
        b, p = prompt_ids.shape
        dev, self.p, total = prompt_ids.device, p, p + limit
        self.rope = sys.modules[type(self.layers[0].self_attn).__module__].apply_rotary_pos_emb
        self.head_dim = self.layers[0].self_attn.head_dim
        self.n_kv = cfg.num_key_value_heads
        self.n_rep = cfg.num_attention_heads // self.n_kv
        # key mask of the whole rollout (prompt padding, then every generated column)
        self.key_mask = torch.ones(b, total, dtype=torch.bool, device=dev)
        self.key_mask[:, :p] = prompt_mask.bool()
        pos = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)  # RoPE ignores left padding
        steps = torch.arange(1, limit + 1, device=dev)
        pos = torch.cat([pos, pos[:, -1:] + steps], 1)
        x = inner.embed_tokens(prompt_ids)
        self.cos, self.sin = inner.rotary_emb(x, pos)  # (B, P + limit, D), once per rollout
        kv = (len(self.layers), b, self.n_kv, total, self.head_dim)
        self.k = torch.empty(kv, dtype=x.dtype, device=dev)
        self.v = torch.empty(kv, dtype=x.dtype, device=dev)
        self.len = 0
        self.prefill_logits = self._run(x, p)

    def _attend(self, i: int, q: torch.Tensor, n: int) -> torch.Tensor:
        """Attention of layer i's queries q (B, H, n, D) over the cache's first `len` columns."""
        attn, s = self.layers[i].self_attn, self.len
        k, v = self.k[i, :, :, :s], self.v[i, :, :, :s]
        km = self.key_mask[:, None, None, :s]
        if n == 1:  # one query per row: pack the heads sharing a key/value head as queries
            b = q.shape[0]
            qp = q.reshape(b, self.n_kv, self.n_rep, self.head_dim)
            out = F.scaled_dot_product_attention(qp, k, v, attn_mask=km, scale=attn.scaling)
            return out.reshape(b, -1, 1, self.head_dim)
        causal = torch.ones(n, s, dtype=torch.bool, device=q.device).tril(s - n)
        mask = km & causal
        diag = torch.arange(n, device=q.device)
        mask[:, :, diag, s - n + diag] = True  # padding queries see themselves: no NaN rows
        if self.n_rep > 1:
            k, v = k.repeat_interleave(self.n_rep, 1), v.repeat_interleave(self.n_rep, 1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling)

    def _run(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """Run n new positions (B, n, H) through the layers; returns the last one's logits."""
        b, s0 = x.shape[0], self.len
        cos, sin = self.cos[:, s0 : s0 + n], self.sin[:, s0 : s0 + n]
        self.len = s0 + n
        shape = (b, n, -1, self.head_dim)
        for i, layer in enumerate(self.layers):
            attn, h = layer.self_attn, layer.input_layernorm(x)
            q = attn.q_proj(h).view(shape).transpose(1, 2)
            k = attn.k_proj(h).view(shape).transpose(1, 2)
            q, k = self.rope(q, k, cos, sin)
            self.k[i, :, :, s0 : s0 + n] = k
            self.v[i, :, :, s0 : s0 + n] = attn.v_proj(h).view(shape).transpose(1, 2)
            o = self._attend(i, q, n).transpose(1, 2).reshape(b, n, -1)
            x = x + attn.o_proj(o)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.model.lm_head(self.model.model.norm(x[:, -1:]))[:, -1]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed (B,) tokens at the next column; returns (B, V) next-token logits."""
        return self._run(self.model.model.embed_tokens(tokens[:, None]), 1)
