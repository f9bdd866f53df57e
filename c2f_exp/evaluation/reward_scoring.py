"""Scalar scores of conversations from a sequence-classification reward model (num_labels=1)."""

from __future__ import annotations

from pathlib import Path

from c2f_exp.core.errors import ConfigError
from c2f_exp.core.hub import check_weights
from c2f_exp.reward import knowledge


class RewardScorer:
    """Scores chat conversations with a reward model directory (HF, e.g. TRL RewardTrainer's).

    Conversations are rendered with the tokenizer's chat template when it has one, else as the
    turns joined by blank lines.
    """

    def __init__(self, path: str, dtype: str = "auto", device: str = "auto", batch_size: int = 16):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from c2f_exp.evaluation.lineup import device_of, ensure_bos

        if Path(path).is_dir():  # safetensors only, complete: a named error, never a pickle
            check_weights(path, "eval.mt_bench.judge.model")
        try:
            self.tok = AutoTokenizer.from_pretrained(path)
            kw = {} if dtype == "auto" else {"dtype": getattr(torch, dtype)}
            model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=1, use_safetensors=True, **kw
            )
        except OSError as e:
            raise ConfigError(
                f"cannot load reward model {path} ({e}); set "
                "eval.mt_bench.judge.model=/path/to/reward_model"
            ) from None
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        model.config.pad_token_id = self.tok.pad_token_id
        knowledge.maybe_attach(model, path)  # our RMs may carry a knowledge head (reward/)
        self.tok.padding_side = "right"
        ensure_bos(self.tok)
        self.model = model.to(device_of(device)).eval()
        self.batch_size = batch_size

    def render(self, conv: list[dict[str, str]]) -> str:
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template(conv, tokenize=False)
        return "\n\n".join(m["content"] for m in conv)

    def score(self, convs: list[list[dict[str, str]]]) -> list[float]:
        """One scalar per conversation: (N,)."""
        import torch

        texts = [self.render(c) for c in convs]
        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            chunk = texts[i : i + self.batch_size]
            has_bos = self.tok.bos_token and chunk[0].startswith(self.tok.bos_token)
            enc = self.tok(
                chunk,
                padding=True,
                truncation=True,
                return_tensors="pt",
                add_special_tokens=not has_bos,
            ).to(self.model.device)
            with torch.no_grad():
                logits = self.model(**enc).logits  # (B, 1)
                r = knowledge.combine(self.model, logits[:, 0], enc.input_ids, enc.attention_mask)
            out += r.float().tolist()
        return out
