"""Bradley-Terry reward models: encoding, scoring, training (TRL), checks (data: preferences.py).

One encoding serves training and scoring, so the reward the PPO loop sees is the reward the
model was trained on:
* `plain` (tiny world, as the base model sees text): `<s> {prompt} {response}</s>`;
* `chat` (hub models): the tokenizer's chat template over the prompt turns plus the response.
The score is the classification logit at the last non-pad token (the appended EOS), or, for a
model whose config has `c2f_reward_pooling: sum` (process_reward.py), the sum of the per-token
logits over the non-pad tokens. A model with a knowledge head (knowledge_reward.py) adds a
learned term over a language model's surprisal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from c2f_exp.core import layout, trainer_resume
from c2f_exp.core.errors import C2FError, ConfigError
from c2f_exp.reward import knowledge

log = logging.getLogger(__name__)
Prompt = str | list[dict[str, str]]  # plain text, or chat turns [{"role", "content"}, ...]
FORMAT_KEY = "c2f_reward_format"  # stored in the reward model's config.json
POOLING_KEY = "c2f_reward_pooling"  # last (default) | sum, also in config.json


class EmptyPreferenceSetError(C2FError):
    """A preference set has no usable pairs."""


def encode(tok: PreTrainedTokenizerBase, prompt: Prompt, response: str, fmt: str) -> list[int]:
    """Token ids of one (prompt, response) as the reward model reads it, ending with EOS."""
    if fmt == "plain":
        text = prompt if isinstance(prompt, str) else " ".join(m["content"] for m in prompt)
        ids = [tok.bos_token_id, *tok(f"{text} {response}", add_special_tokens=False).input_ids]
    else:
        turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        text = tok.apply_chat_template(
            [*turns, {"role": "assistant", "content": response}], tokenize=False
        )
        ids = tok(text, add_special_tokens=False).input_ids
    return ids if ids and ids[-1] == tok.eos_token_id else [*ids, tok.eos_token_id]


def token_scores(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The `score` head read at every position: (B, L) ids and mask -> (B, L) float32 scores."""
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    return model.score(hidden).squeeze(-1).float()


@torch.no_grad()
def score_ids(
    model: PreTrainedModel, ids: list[list[int]], pad_id: int, batch_size: int = 32
) -> torch.Tensor:
    """Scores of token sequences, right-padded (positions as in training). Returns (N,).

    Pooling as the model's config says: the last non-pad token's logit, or (`sum`) the sum of
    the per-token logits over the non-pad tokens; plus the knowledge head where the model has
    one (knowledge_reward.py).
    """
    model.eval()
    dev = next(model.parameters()).device
    pool_sum = getattr(model.config, POOLING_KEY, "last") == "sum"
    out = []
    for i in range(0, len(ids), batch_size):
        x, mask = (t.to(dev) for t in knowledge.pad_batch(ids[i : i + batch_size], pad_id))
        if pool_sum:
            r = (token_scores(model, x, mask) * mask).sum(-1).cpu()
        else:
            r = model(input_ids=x, attention_mask=mask).logits[:, 0].float().cpu()
        out.append(knowledge.combine(model, r, x, mask))
    return torch.cat(out) if out else torch.zeros(0)


def score_texts(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    responses: list[str],
    batch_size: int = 32,
    fmt: str | None = None,
) -> torch.Tensor:
    """Reward of each (prompt, response) pair. Returns (N,) float32 on CPU.

    `fmt` defaults to the format the model was trained with (its config's `c2f_reward_format`).
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    fmt = fmt or getattr(model.config, FORMAT_KEY, "plain")
    ids = [encode(tok, p, r, fmt) for p, r in zip(prompts, responses, strict=True)]
    return score_ids(model, ids, tok.pad_token_id, batch_size)


def load_reward_model(
    ref: str, dtype: torch.dtype | None = None, trainable: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A saved reward model and its tokenizer (frozen and in eval mode unless `trainable`)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ref)
    model = AutoModelForSequenceClassification.from_pretrained(
        ref, dtype=dtype, use_safetensors=True
    )
    knowledge.maybe_attach(model, ref, dtype)
    if not trainable:
        model.eval().requires_grad_(False)
    return model, tok


def check_compatible(rm_ref: str, policy_ref: str, key: str = "reward.path") -> None:
    """Raise ConfigError unless `rm_ref` is a one-output classifier with the policy's vocabulary.

    The critic starts from the reward model and the PPO loop scores the policy's text with it, so
    a different tokenizer (another model family, a resized vocabulary) is refused up front.
    """
    from transformers import AutoConfig, AutoTokenizer

    try:
        conf = AutoConfig.from_pretrained(rm_ref)
        rm_tok, pol_tok = (
            AutoTokenizer.from_pretrained(rm_ref),
            AutoTokenizer.from_pretrained(policy_ref),
        )
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"{key}={rm_ref} cannot be loaded as a reward model with its tokenizer "
            f"({type(e).__name__}); point {key} at a saved reward model"
        ) from None
    archs = conf.architectures or []
    if conf.num_labels != 1 or not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ConfigError(
            f"{key}={rm_ref} is not a one-output sequence-classification model "
            f"(architectures {archs}, num_labels {conf.num_labels}); point {key} at "
            "a reward model, or set it to null to train one"
        )
    rm_vocab, pol_vocab = rm_tok.get_vocab(), pol_tok.get_vocab()
    if rm_vocab != pol_vocab:
        differ = len(set(rm_vocab.items()) ^ set(pol_vocab.items()))
        raise ConfigError(
            f"{key}={rm_ref} has a tokenizer vocabulary that differs from the "
            f"policy's ({policy_ref}): {len(rm_vocab)} vs {len(pol_vocab)} tokens, "
            f"{differ} entries differ; use a reward model trained from the policy's "
            f"model family, or set {key}=null to train one"
        )


def pairwise_accuracy(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    pairs: list[dict],
    fmt: str,
    batch_size: int = 32,
) -> dict[str, float]:
    """Share of pairs with score(chosen) > score(rejected), and the mean margin."""
    ch = score_texts(
        model, tok, [p["prompt"] for p in pairs], [p["chosen"] for p in pairs], batch_size, fmt
    )
    rj = score_texts(
        model, tok, [p["prompt"] for p in pairs], [p["rejected"] for p in pairs], batch_size, fmt
    )
    return {
        "accuracy": (ch > rj).float().mean().item(),
        "margin": (ch - rj).mean().item(),
        "n_pairs": len(pairs),
    }


def init_reward_model(
    src: str,
    fmt: str,
    seed: int,
    template_src: Callable[[], str] | None = None,
    pooling: str = "last",
    arch: dict[str, int] | None = None,
) -> tuple[Any, Any]:
    """A fresh one-output classifier from model `src`, ready for `train_reward_model`.

    The pad token is the tokenizer's, else <unk> (never EOS: the score is read at the EOS). For
    `chat` with a tokenizer that has no chat template (a base model), the template of
    `template_src()` (the instruct partner) is used. `pooling` (last | sum) is stored in the
    config for `score_ids`; `arch` (the set fields of `reward.arch`: RewardArchConf.overrides)
    grows the model (reward/arch.py).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    if fmt == "chat" and not tok.chat_template and template_src is not None:
        tok.chat_template = AutoTokenizer.from_pretrained(template_src()).chat_template
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        src, num_labels=1, dtype=torch.float32, use_safetensors=True
    )
    if arch:
        from c2f_exp.reward.arch import grow

        model = grow(model, arch, seed)
    model.config.pad_token_id = tok.pad_token_id
    setattr(model.config, FORMAT_KEY, fmt)
    setattr(model.config, POOLING_KEY, pooling)
    return model, tok


def train_reward_model(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    pairs: list[dict],
    fmt: str,
    tcfg: Any,
    workdir: Path,
    seed: int,
) -> list[dict]:
    """Bradley-Terry training with TRL's RewardTrainer on pre-encoded pairs (same `encode`).

    Returns the trainer's log history.
    """
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    cols = {
        "chosen_ids": [encode(tok, p["prompt"], p["chosen"], fmt) for p in pairs],
        "rejected_ids": [encode(tok, p["prompt"], p["rejected"], fmt) for p in pairs],
    }
    if all("margin" in p for p in pairs):  # -log sigmoid(r_c - r_r - margin), Llama 2 eq. 2
        cols["margin"] = [float(p["margin"]) for p in pairs]
    ds = Dataset.from_dict(cols)
    args = RewardConfig(
        output_dir=str(workdir),
        per_device_train_batch_size=tcfg.batch_size,
        gradient_accumulation_steps=tcfg.grad_accum,
        learning_rate=tcfg.lr,
        num_train_epochs=tcfg.epochs,
        max_steps=tcfg.max_steps,
        warmup_steps=float(tcfg.warmup_ratio),
        weight_decay=tcfg.weight_decay,
        lr_scheduler_type="cosine",
        max_length=tcfg.max_length,
        center_rewards_coefficient=tcfg.center_rewards_coefficient,
        bf16=tcfg.bf16,
        use_cpu=not torch.cuda.is_available(),
        activation_checkpointing=tcfg.gradient_checkpointing,
        report_to=[],
        **trainer_resume.checkpoint_args(tcfg.save_steps),
        logging_steps=5,
        seed=seed,
        disable_tqdm=False,
        dataloader_num_workers=0,
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    if len(trainer.train_dataset) == 0:
        raise EmptyPreferenceSetError(
            f"every preference pair is longer than "
            f"reward.train.max_length={tcfg.max_length} tokens; raise it"
        )
    trainer_resume.train(trainer, "reward model training")
    return trainer.state.log_history


def reward_model_ref(artifact: Path) -> str:
    """The reward model of a `reward` artifact: its `model/` dir, or the hub id it points to."""
    ref = artifact / layout.MODEL_REF
    return json.loads(ref.read_text())["ref"] if ref.is_file() else str(artifact / "model")
