"""The resolved versions of the stack a run used (recorded in every manifest.json).

Results depend on them (a transformers or torch upgrade rebuilt another tiny world from the
same seed), so each run says what it ran on; `constraints.txt` pins the stack the documented
results were measured with.
"""

from __future__ import annotations

import functools
import platform
from importlib import metadata

PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "trl",
    "deepspeed",
    "datasets",
    "safetensors",
    "numpy",
    "hydra-core",
    "omegaconf",
    "lm-eval",
    "wandb",
    "mlflow",
)


@functools.cache
def stack_versions() -> dict[str, str]:
    """{package: version} of PACKAGES that are installed, plus python and c2f_exp."""
    out = {"python": platform.python_version()}
    for name in ("c2f_exp", *PACKAGES):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
