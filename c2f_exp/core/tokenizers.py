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


def _tokenizer_config(ref: str) -> dict:
    """tokenizer_config.json and special_tokens_map.json of a local model dir, merged."""
    out: dict = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        try:
            cfg = json.loads((Path(ref) / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(cfg, dict):
            out.update({k: v for k, v in cfg.items() if v is not None})
    return out


def _eos_in_config(ref: str, conf: dict) -> bool:
    if conf.get("eos_token_id") is not None:
        return True
    try:
        gen = json.loads((Path(ref) / "generation_config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(gen, dict) and gen.get("eos_token_id") is not None


def check_pair(refs: dict[str, str], cfg: Any) -> None:
    """Preflight of base and instruct as local directories (hub ids are checked as they load),
    from their files only: the same model class and vocabulary (the merge adds one's weights
    to the other's), an EOS token, and a chat template on the instruct model when the reward
    model reads chat (`reward.format=chat`). ConfigError naming the key and the fix."""
    from c2f_exp.core.errors import ConfigError
    from c2f_exp.core.hub import check_config_json

    local = {r: p for r, p in refs.items() if Path(p).expanduser().is_dir()}
    confs = {r: check_config_json(p, f"model.{r}.path") for r, p in local.items()}
    if len(confs) == 2:
        b, i = confs["base"], confs["instruct"]
        for field in ("model_type", "vocab_size", "hidden_size", "num_hidden_layers"):
            if b.get(field) != i.get(field):
                raise ConfigError(
                    f"model.instruct.path={refs['instruct']} has {field}={i.get(field)} but "
                    f"model.base.path={refs['base']} has {b.get(field)}: the Knowledge Residue "
                    "Merger adds the base's RL residue to the instruct model, so both must be "
                    "one architecture (e.g. Mistral-7B-v0.1 with Mistral-7B-Instruct-v0.2)"
                )
    for role, ref in local.items():
        tcfg, conf = _tokenizer_config(ref), confs[role]
        if not tcfg:  # no tokenizer files: the stage that needs them names that
            continue
        if not (tcfg.get("eos_token") or _eos_in_config(ref, conf)):
            raise ConfigError(
                f"model.{role}.path={ref}: the tokenizer has no EOS token (tokenizer_config.json"
                " eos_token / config.json eos_token_id); rollouts and answers need one to stop"
            )
    reward = getattr(cfg, "reward", None)
    if reward is not None and str(reward.format) == "chat" and "instruct" in local:
        ref = local["instruct"]
        has = (
            "chat_template" in _tokenizer_config(ref)
            or (Path(ref) / "chat_template.jinja").is_file()
        )
        if not has:
            raise ConfigError(
                f"model.instruct.path={ref} has no chat template (tokenizer_config.json "
                "chat_template or chat_template.jinja) and reward.format=chat needs one: use "
                "an instruct model that ships one, or reward.format=plain"
            )
