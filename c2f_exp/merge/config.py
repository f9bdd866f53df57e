"""`merger` config group: typed schema (`MergerConf`) and the checks types cannot express.

`coefficient`, `shard_size` and the values of `module_overrides` are typed `Any` because OmegaConf
has no "number or list" type; `MergerConf.__post_init__` checks them and names the key.

The defaults here are the only ones: the Knowledge Residue Merger's (the default option,
conf/merger/knowledge_residue.yaml, holds nothing else); the comparison merges (merger=ties,
dare, linear, slerp) hold only what they change.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from c2f_exp.core.choices import DTYPES, DType, choice
from c2f_exp.core.errors import bad_value, check_seed

MergeMethod = choice(
    "MergeMethod", ("knowledge_residue", "linear", "slerp", "ties", "dare"), __name__
)
MergeFilter = choice("MergeFilter", ("none", "magnitude", "dare", "sign_agree"), __name__)
MismatchPolicy = choice("MismatchPolicy", ("error", "keep_instruct", "skip"), __name__)
METHODS, FILTERS, POLICIES = MergeMethod.values(), MergeFilter.values(), MismatchPolicy.values()
OUT_DTYPES = DTYPES
# Which inputs each method reads (base is the reference point of every task vector).
ROLES = {
    "knowledge_residue": ("instruct", "base", "coarse"),
    "linear": ("instruct", "coarse"),
    "slerp": ("instruct", "coarse"),
    "ties": ("instruct", "base", "coarse"),
    "dare": ("instruct", "base", "coarse"),
}
_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
}


@dataclass
class MergerConf:
    """Knowledge Residue Merger (Mistral-C2F, docs/method.md §2.2): fine = instruct + lambda *
    filter(coarse - base); and the comparison merges (`method`)."""

    method: MergeMethod = MergeMethod.knowledge_residue
    base: str | None = None  # null: the run's base model (prepare stage or model.base.path)
    instruct: str | None = None  # null: the run's instruct model
    coarse: str | None = None  # null: <coarse artifact>/actor from the coarse stage
    # lambda: a number, or a list of anchors interpolated over depth (mergekit's gradient).
    # OUR default (the paper gives none): 1.0 at the first layer falling to 0.0 at the last;
    # no merge beat it on MT-Bench over 7 worlds (docs/results.md)
    coefficient: Any = field(default_factory=lambda: [1.0, 0.0])
    # knowledge_residue only: none | magnitude (keep the top `density`) | dare (drop `drop_p`)
    # | sign_agree
    filter: MergeFilter = MergeFilter.none
    density: float = 1.0  # magnitude filter / ties trimming: fraction of entries kept
    drop_p: float = 0.0  # dare filter / dare method: drop probability (rescale 1/(1-p))
    seed: int = 0  # dare masks
    # tensor-name substring -> lambda, first match wins, e.g. {self_attn: 0.5}
    module_overrides: dict[str, Any] = field(default_factory=dict)
    # tensors missing or shaped differently in one model: error | keep_instruct | skip
    on_mismatch: MismatchPolicy = MismatchPolicy.error
    # also write the merged model here (atomically; refuses an existing dir unless overwrite)
    output: str | None = None
    overwrite: bool = False  # allow replacing an existing merger.output directory
    # null: each tensor keeps the instruct model's dtype; float32 | bfloat16 | float16
    out_dtype: DType | None = None
    shard_size: Any = "200MB"  # bytes (int) or a string like 200MB / 2GB / 512MiB
    survival_warn: float = 0.5  # warn when less residue than this survives the output cast
    # |lambda| above this is refused: lambda=-1e9 writes a model of noise with exit 0. The
    # sweeps use 0..3; raise it only if you mean it.
    max_abs_coefficient: float = 10.0

    def __post_init__(self) -> None:
        """The rules its types cannot express (the choice fields are enums: a bad one fails at
        composition). Raises ConfigError naming the key."""
        if self.filter != MergeFilter.none and self.method != MergeMethod.knowledge_residue:
            raise bad_value(
                "filter",
                self.filter,
                f"none for merger.method={self.method}",
                "filters apply to knowledge_residue; ties/dare have their own",
            )
        if not 0 < self.density <= 1:
            raise bad_value("density", self.density, "in (0, 1]")
        if not 0 <= self.drop_p < 1:
            raise bad_value("drop_p", self.drop_p, "in [0, 1)")
        if not 0 <= self.survival_warn <= 1:
            raise bad_value("survival_warn", self.survival_warn, "in [0, 1]")
        bound = self.max_abs_coefficient
        if not (_is_number(bound) and math.isfinite(bound) and bound > 0):
            raise bad_value("max_abs_coefficient", bound, "a finite number > 0")
        lambdas = [
            ("coefficient", self.coefficient),
            *((f"module_overrides.{p}", x) for p, x in (self.module_overrides or {}).items()),
        ]
        for key, v in lambdas:
            worst = max(coefficient_values(v, key), key=abs)
            if abs(worst) > bound:
                raise bad_value(
                    key,
                    worst,
                    f"within +-{bound:g} (merger.max_abs_coefficient)",
                    "a lambda this large swamps the instruct weights; set "
                    "merger.max_abs_coefficient higher only if you mean it",
                )
        if self.method in (MergeMethod.linear, MergeMethod.slerp):
            for key, v in lambdas:
                if not all(0 <= t <= 1 for t in coefficient_values(v, key)):
                    raise bad_value(key, v, f"in [0, 1] for {self.method} (the weight of coarse)")
        parse_size(self.shard_size, "shard_size")
        check_seed("seed", self.seed)


def parse_size(value: Any, key: str = "merger.shard_size") -> int:
    """Bytes from an int or a string like '200MB', '1.5GB', '512MiB' (decimal MB = 10**6)."""
    if isinstance(value, bool):
        raise bad_value(key, value, "a positive byte count or a size like 200MB")
    if isinstance(value, (int, float)) and value > 0:
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMG]I?B|B)?\s*", str(value), re.I)
    if not m or float(m.group(1)) <= 0:
        raise bad_value(key, value, "a positive byte count or a size like 200MB")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").upper()])


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def coefficient_values(value: Any, key: str = "merger.coefficient") -> list[float]:
    """A coefficient as a list of anchors (one value for a scalar). Raises ConfigError.

    NaN and inf are refused here, at preflight: they would only fail inside the merge, after
    every upstream stage has trained."""
    if _is_number(value):
        value = [value]
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise bad_value(
            key,
            value,
            "a number or a list of numbers (one per layer, or fewer "
            "anchors interpolated over depth)",
        )
    vals = list(value)
    if not vals or not all(_is_number(v) for v in vals):
        raise bad_value(key, vals, "a number or a non-empty list of numbers")
    if not all(math.isfinite(v) for v in vals):
        raise bad_value(key, vals if len(vals) > 1 else vals[0], "finite (not nan or inf)")
    return [float(v) for v in vals]


def check_coefficient_length(value: Any, num_layers: int, key: str = "merger.coefficient") -> None:
    """A list may have 1..num_layers anchors; more means it was written for another model."""
    vals = coefficient_values(value, key)
    if len(vals) > num_layers:
        raise bad_value(
            key,
            vals,
            f"a number or a list of at most {num_layers} values (one per "
            "layer of this model; shorter lists are interpolated over depth)",
            f"the model has {num_layers} layers",
        )
