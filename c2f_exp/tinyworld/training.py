"""Tiny Mistral-architecture models: build, pretrain (`base`), SFT (`instruct`).

Pretraining uses transformers' `Trainer` on packed blocks; SFT uses TRL's `SFTTrainer` on
conversational prompt-completion data (loss on the completion only). Both save plain Hugging
Face model directories (safetensors) with the tokenizer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

from c2f_exp.core import trainer_resume

log = logging.getLogger(__name__)


def build_model(tok: PreTrainedTokenizerFast, arch: Any, seed: int) -> MistralForCausalLM:
    """A freshly initialised Mistral-architecture model sized by `arch` (model.arch config)."""
    torch.manual_seed(seed)
    cfg = MistralConfig(
        vocab_size=len(tok),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_kv_heads,
        head_dim=arch.hidden_size // arch.num_heads,
        max_position_embeddings=arch.max_position_embeddings,
        sliding_window=None,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        rope_theta=10000.0,
    )
    return MistralForCausalLM(cfg)


def pack(tok: PreTrainedTokenizerFast, docs: list[str], block: int) -> torch.Tensor:
    """Concatenate '<s> doc </s>' and cut into (N, block) rows (the tail is dropped)."""
    ids: list[int] = []
    for d in docs:
        ids += [tok.bos_token_id, *tok(d, add_special_tokens=False).input_ids, tok.eos_token_id]
    n = len(ids) // block
    return torch.tensor(ids[: n * block]).view(n, block)


def _common_args(tcfg: Any, out: Path, seed: int) -> dict[str, Any]:
    return dict(
        output_dir=str(out),
        per_device_train_batch_size=tcfg.batch_size,
        learning_rate=tcfg.lr,
        lr_scheduler_type="cosine",
        warmup_steps=tcfg.warmup_steps,
        weight_decay=0.0,
        max_steps=tcfg.steps,
        logging_steps=max(1, tcfg.steps // 20),
        **trainer_resume.checkpoint_args(tcfg.save_steps),
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
        max_grad_norm=1.0,
        adam_beta2=getattr(tcfg, "adam_beta2", 0.999),
    )


def pretrain(
    model: MistralForCausalLM,
    tok: PreTrainedTokenizerFast,
    docs: list[str],
    tcfg: Any,
    workdir: Path,
    seed: int,
) -> list[dict]:
    """Causal-LM pretraining on packed blocks. Returns the trainer's log history."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    blocks = pack(tok, docs, tcfg.block_size)
    ds = Dataset.from_dict({"input_ids": blocks.tolist(), "labels": blocks.tolist()})
    log.info(
        "pretraining on %d blocks of %d tokens (%d steps)", len(ds), tcfg.block_size, tcfg.steps
    )
    trainer = Trainer(
        model=model, args=TrainingArguments(**_common_args(tcfg, workdir, seed)), train_dataset=ds
    )
    trainer_resume.train(trainer, "pretraining")
    return trainer.state.log_history


def conversation(row: dict) -> dict[str, list[dict[str, str]]]:
    """TRL's conversational prompt-completion form of an SFT row; a row's optional `history`
    ([user, assistant, ...]) goes before its prompt."""
    turns = [*row.get("history", ()), row["prompt"]]  # user, assistant, ..., user
    prompt = [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(turns)]
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": row["completion"]}]}


def sft(
    model: MistralForCausalLM,
    tok: PreTrainedTokenizerFast,
    rows: list[dict],
    tcfg: Any,
    workdir: Path,
    seed: int,
) -> list[dict]:
    """Supervised fine-tuning with TRL on chat-formatted prompt-completion pairs (`conversation`);
    the loss is on the last assistant turn only."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    ds = Dataset.from_list([conversation(r) for r in rows])
    args = SFTConfig(
        **_common_args(tcfg, workdir, seed),
        max_length=tcfg.block_size,
        completion_only_loss=True,
        packing=False,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    trainer_resume.train(trainer, "SFT")
    return trainer.state.log_history
