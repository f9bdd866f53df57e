"""Choice-typed config fields: OmegaConf rejects any other value at composition, naming the key.

OmegaConf supports `Enum` fields (not `Literal`), so each set of choices is a `Choice` enum
whose member names equal their values. Members are `str`s that compare, hash, print, format
and serialise (json, OmegaConf.to_yaml) as the plain value, so code that reads
`cfg.tracker.mode == "offline"` or hashes a config subtree sees exactly what it saw before.
A bad value on the command line becomes one line via `cli_errors`:
`tracker.mode must be one of offline, online, disabled (got 'onlien')`.
"""

from __future__ import annotations

from enum import Enum

import yaml


class Choice(str, Enum):
    """Base of the choice enums; build them with `choice()`."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    def __repr__(self) -> str:
        return repr(str(self.value))

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


def _represent(dumper: yaml.BaseDumper, member: Choice) -> yaml.Node:
    return dumper.represent_str(str(member.value))


# yaml.dump / safe_dump (model cards, Hugging Face's ModelCardData) write a member as its value,
# not as a python/object tag that safe_load refuses.
for _dumper in (yaml.Dumper, yaml.SafeDumper):
    yaml.add_multi_representer(Choice, _represent, Dumper=_dumper)


def choice(name: str, values: tuple[str, ...], module: str) -> type[Choice]:
    """A `Choice` enum `name` with one member per value (name == value). Assign it to a
    module-level variable called `name` in `module` so that configs holding it pickle
    (joblib / submitit sweep launchers send configs to other processes)."""
    return Choice(name, [(v, v) for v in values], module=module, qualname=name)  # type: ignore[return-value]


# Choices shared by several groups (written once here).
DTYPES = ("float32", "bfloat16", "float16")
DType = choice("DType", DTYPES, __name__)  # model.*.dtype, merger.out_dtype
ModelDType = choice("ModelDType", ("auto", *DTYPES), __name__)  # eval: auto = the model's own
Source = choice("Source", ("tinyworld", "hub"), __name__)  # model.source, data.source
