"""README.md model cards with Hugging Face front matter for every model directory we write.

The front matter is what the Hub and `huggingface_hub.ModelCard.load` read: `library_name`,
`tags`, `base_model` (+ `base_model_relation`) and a `c2f_exp` block (role, every parent as
given, recipe). Like mergekit's `card.py`, `base_model` lists only Hub ids: the Hub rejects
local paths there, so parents that are local directories appear only in the `c2f_exp` block
and the card's text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CARD = "README.md"
TITLES = {
    "base": "Base model",
    "instruct": "Instruct model (SFT)",
    "coarse": "Coarse Actor (PPO with Continuous Maximization)",
    "reward": "Reward model (Bradley-Terry)",
    "fine": "Fine Actor (merged)",
}
# The Hub's `base_model_relation` values: how a model derives from its `base_model`.
RELATIONS = {"instruct": "finetune", "coarse": "finetune", "reward": "finetune", "fine": "merge"}


def is_hub_id(ref: str) -> bool:
    """True for `org/name` or `name` refs that are no local path (mergekit's `is_hf` rule,
    without its network check)."""
    if not ref or ref.startswith(("/", ".", "~")) or ref.count("/") > 1 or os.sep + os.sep in ref:
        return False
    return not Path(ref).exists()


def card_metadata(
    role: str,
    parents: Mapping[str, str] | None = None,
    tags: Sequence[str] = (),
    recipe: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The front matter as a dict (see the module docstring)."""
    if role not in TITLES:
        raise ValueError(f"model card role must be one of {sorted(TITLES)} (got {role!r})")
    parents = dict(parents or {})
    meta: dict[str, Any] = {
        "library_name": "transformers",
        "tags": list(dict.fromkeys(["c2f_exp", role, *tags])),  # ordered, no duplicates
    }
    hub_ids = list(dict.fromkeys(r for r in parents.values() if is_hub_id(r)))
    if hub_ids:
        meta["base_model"] = hub_ids if role == "fine" else hub_ids[0]
        if role in RELATIONS:
            meta["base_model_relation"] = RELATIONS[role]
    own: dict[str, Any] = {"role": role, "parents": parents}
    if recipe is not None:
        own["recipe"] = json.loads(json.dumps(dict(recipe), default=str))  # plain YAML types
    meta["c2f_exp"] = own
    return meta


def write_model_card(
    model_dir: str | Path,
    *,
    role: str,
    description: str,
    parents: Mapping[str, str] | None = None,
    tags: Sequence[str] = (),
    recipe: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write `<model_dir>/README.md` and return its path.

    Args:
        model_dir: an existing model directory.
        role: "base", "instruct", "coarse", "reward" or "fine".
        description: markdown paragraph(s) saying how the model was made.
        parents: what it was made from, name -> Hub id or local directory
            (e.g. {"policy": "mistralai/Mistral-7B-v0.1"}); Hub ids become `base_model`.
        tags: extra Hub tags ("c2f_exp" and `role` are always there).
        recipe: hyperparameters worth repeating (the merge's coefficients, ...).
        metrics: numbers measured when it was made, shown as a table.
    """
    from huggingface_hub import ModelCard, ModelCardData

    d = Path(model_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"model card: {d} is not a directory; save the model first")
    data = ModelCardData(**card_metadata(role, parents, tags, recipe))
    body = [f"# {TITLES[role]}", "", description.strip(), ""]
    if parents:
        body += ["## Made from", "", *(f"- {k}: `{v}`" for k, v in parents.items()), ""]
    if recipe:
        body += ["## Recipe", "", "```json", json.dumps(recipe, indent=2, default=str), "```", ""]
    if metrics:
        rows = [f"| {k} | {_fmt(v)} |" for k, v in metrics.items() if _scalar(v)]
        body += ["## Metrics", "", "| metric | value |", "|---|---|", *rows, ""]
    body.append("Written by the c2f_exp pipeline (Coarse-to-Fine RLHF).")
    path = d / CARD
    ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n").save(path)
    return path


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
