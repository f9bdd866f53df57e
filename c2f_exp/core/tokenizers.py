"""Loading tokenizers the way every stage needs them: a pad token that exists.

Mistral's (and Llama's) tokenizers ship without a pad token. Batching needs one, so the
loader gives them `<unk>` (never EOS where it can be avoided: EOS ends responses and marks
where reward models read their score; a pad equal to EOS would blur both), else EOS.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def ensure_pad(tok: Any) -> Any:
    """Give `tok` a pad token if it has none (`<unk>`, else EOS); returns `tok`."""
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
        if tok.pad_token is None:
            raise ValueError(f"{tok.name_or_path}: the tokenizer has no pad, unk or EOS token")
        log.info("%s has no pad token: padding with %r", tok.name_or_path, tok.pad_token)
    return tok


def load_tokenizer(ref: str, padding_side: str | None = None) -> Any:
    """`AutoTokenizer.from_pretrained(ref)` with a pad token (and `padding_side` if given)."""
    from transformers import AutoTokenizer

    tok = ensure_pad(AutoTokenizer.from_pretrained(ref))
    if padding_side:
        tok.padding_side = padding_side
    return tok


def save_tokenizer(tok: Any, path: str | Path) -> None:
    """`tok.save_pretrained(path)`, with a tokenizer_config.json older transformers also load.

    transformers 5 writes `tokenizer_class: TokenizersBackend` (a name 4.x lacks),
    `extra_special_tokens` as a list (4.x expects a dict of named tokens there and fails) and
    the chat template only to chat_template.jinja (4.x before ~4.50 reads it from the config).
    Both releases read `PreTrainedTokenizerFast`, `additional_special_tokens` and `chat_template`
    the same way (tested 4.46.3, 4.57.6, 5.24), so the saved config uses those; other
    tokenizer classes are left as they are. A tokenizer loaded from a directory whose config
    names its class (Mistral's `LlamaTokenizer`) keeps that class, and the padding side is
    written, so a Coarse Actor or reward model loads with its base model's tokenizer.
    """
    tok.save_pretrained(path)
    cfg_path = Path(path) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("tokenizer_class") == "TokenizersBackend":
        cfg["tokenizer_class"] = _source_class(tok) or "PreTrainedTokenizerFast"
    cfg["padding_side"] = tok.padding_side  # else a reload pads on the right
    if isinstance(cfg.get("extra_special_tokens"), list):
        extra = cfg.pop("extra_special_tokens")
        cfg["additional_special_tokens"] = cfg.get("additional_special_tokens") or extra
    template = Path(path) / "chat_template.jinja"
    if "chat_template" not in cfg and template.is_file():
        cfg["chat_template"] = template.read_text()
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def _source_class(tok: Any) -> str | None:
    """The `tokenizer_class` the directory `tok` was loaded from names, unless generic."""
    cfg = Path(str(tok.name_or_path)) / "tokenizer_config.json"
    try:
        name = json.loads(cfg.read_text()).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name != "TokenizersBackend" else None
