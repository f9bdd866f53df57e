"""Which models the eval stage compares, how each is prompted, and loading them.

Default: every model the run produced or was given — `base` and `instruct` (prepare artifact or
`model.<role>.path`), `coarse` (`<coarse artifact>/actor`) when the coarse stage ran, `fine` (the
merge artifact) when merge ran. `eval.models: {name: path}` replaces that list.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from c2f_exp.core import hub
from c2f_exp.core.errors import ConfigError

log = logging.getLogger(__name__)
ORDER = ("base", "instruct", "coarse", "fine")


@dataclass
class ModelRef:
    name: str
    path: str  # local model dir or hub id
    chat: bool  # prompt with the tokenizer's chat template
    tokenizer: str  # where the tokenizer is read from (the model dir, else the base's)


def ordered(names: list[str]) -> list[str]:
    """base, instruct, coarse, fine first (the report's columns), then the rest sorted."""
    return [n for n in ORDER if n in names] + sorted(n for n in names if n not in ORDER)


def _has_tokenizer(path: str) -> bool:
    p = Path(path)
    return not p.is_dir() or any(
        (p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
    )


def resolve_models(ctx: Any) -> list[ModelRef]:
    """The models to evaluate, from `eval.models` or the run's upstream artifacts."""
    from c2f_exp.core import layout

    ecfg = ctx.cfg.eval
    if ecfg.models:
        paths = {n: hub.resolve_model(p, f"eval.models.{n}") for n, p in ecfg.models.items()}
    else:
        up = ctx.upstream
        paths = {role: layout.model_dir(ctx.cfg, up, role) for role in ("base", "instruct")}
        for stage, role in (("coarse", "coarse"), ("merge", "fine")):
            if stage in up:
                paths[role] = str(layout.stage_model_dir(stage, up[stage]["path"], role))
    base_tok = paths.get("base")
    refs = []
    for name in ordered(list(paths)):
        path = paths[name]
        tok = path if _has_tokenizer(path) or base_tok is None else base_tok
        refs.append(ModelRef(name, path, _chat(ecfg.chat, name), tok))
    return refs


def _chat(chat_cfg: Any, name: str) -> bool:
    """`eval.chat[name]`; models not listed there are taken as instruct-style (chat)."""
    return bool(chat_cfg[name]) if name in chat_cfg else True


def ensure_bos(tok: Any) -> Any:
    """Make `tok(text)` start with BOS, as Llama/Mistral tokenizers do by default.

    lm-eval and plain prompting rely on the tokenizer adding BOS. A tokenizer that does not (the
    tiny world's word-level one) gets a `TemplateProcessing` post-processor, in memory only.
    """
    bos = tok.bos_token_id
    if bos is None or tok("a").input_ids[:1] == [bos]:
        return tok
    from tokenizers.processors import TemplateProcessing

    backend = getattr(tok, "_tokenizer", None) or getattr(tok, "backend_tokenizer", None)
    if backend is None:
        log.warning("tokenizer %s does not add BOS and cannot be patched", type(tok).__name__)
        return tok
    backend.post_processor = TemplateProcessing(
        single=f"{tok.bos_token} $A",
        pair=f"{tok.bos_token} $A $B",
        special_tokens=[(tok.bos_token, bos)],
    )
    return tok


def device_of(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load(ref: ModelRef, dtype: str, device: str) -> tuple[Any, Any]:
    """Load (model, tokenizer) for evaluation: eval mode, on `device`, left padding."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = "eval.mt_bench.judge.model" if ref.name == "judge" else f"eval.models.{ref.name}"
    if Path(ref.path).is_dir():  # safetensors only, complete: a named error, never a pickle
        hub.check_weights(ref.path, key)
    try:
        tok = AutoTokenizer.from_pretrained(ref.tokenizer)
        kw = {} if dtype == "auto" else {"dtype": getattr(torch, dtype)}
        model = AutoModelForCausalLM.from_pretrained(ref.path, use_safetensors=True, **kw)
    except OSError as e:
        raise ConfigError(
            f"cannot load model '{ref.name}' from {ref.path} ({e}); "
            f"set eval.models.{ref.name}=/path/to/model"
        ) from None
    model = model.to(device_of(device)).eval()
    check_finite(model, key, ref.path)  # after the move: on a GPU, not the CPU
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    ensure_bos(tok)
    return model, tok


def check_finite(model: Any, key: str, path: str) -> None:
    """Refuse weights holding NaN/inf (a diverged run): they would generate garbage that is
    scored as if it were answers, with exit 0. One pass over the weights, once per load."""
    import torch

    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ConfigError(
                f"{key}={path}: weight {name} holds NaN/inf values (a diverged run); "
                "evaluate a checkpoint from before the divergence"
            )


def free_memory() -> None:
    """Collect dropped models before the next one loads (GPU cache included)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with `n` intra-op threads (None: unchanged), restoring the previous count after."""
    import torch

    prev = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)
