"""Plain builders shared by several test modules (no tests, no fixtures: pytest collects nothing
here). Fixtures live in tests/conftest.py; test modules import these as `tests.helpers.<name>`
and never import each other.

coarse: the coarse stage's config, micro world, trainer. reward: the reward stage's micro world,
config, runner. eval: the eval stage's tiny artifact, config, context. merge: tiny Mistral state
dicts, the base/instruct/coarse trio, the merge stage's config and runner. cli: the CLI in-process.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"

# The micro architecture of in-process tiny-world models (~50k parameters): one definition for
# the coarse, reward and eval builders (as attributes: SimpleNamespace(**MICRO) or OmegaConf).
MICRO = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_layers": 2,
    "num_heads": 2,
    "num_kv_heads": 1,
    "max_position_embeddings": 256,
}
