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


def compose_root(overrides: list[str] | None = None, run_dir: Path | str = "/tmp/c2f-test-run"):
    """The root config `python -m c2f_exp <overrides>` composes (a DictConfig), with the paths
    a job would get (`${hydra:runtime.*}` cannot resolve outside a job). Builders merge their
    own values on top; `check` then gives what the stages get."""
    from hydra import compose, initialize_config_dir

    from c2f_exp.config import register

    register()
    overrides = ["tracker=none", *(overrides or [])]
    for key, value in (("root_dir", ROOT), ("output_dir", run_dir)):
        if not any(o.lstrip("+~").startswith(f"paths.{key}=") for o in overrides):
            overrides.append(f"paths.{key}={value}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def check(cfg):
    """What the pipeline does before any stage (`config.validate`): every schema class's rules,
    then the rules between groups for the listed stages. Returns the typed config the stages
    get (`C2FConfig`); raises ConfigError naming the key."""
    from c2f_exp.config import validate
    from c2f_exp.pipeline import registry

    return validate(cfg, tuple(registry()))


def config_error(build) -> str:
    """The one line `build()` fails with, as the CLI prints it: a schema rule's ConfigError, or
    a choice field's OmegaConf ValidationError (raised when the value is set). Fails the test
    if `build()` raises nothing else or the message spans lines."""
    import pytest
    from omegaconf.errors import ValidationError

    from c2f_exp.cli_errors import one_line
    from c2f_exp.core.errors import ConfigError

    with pytest.raises((ConfigError, ValidationError)) as e:
        build()
    msg = str(e.value) if isinstance(e.value, ConfigError) else one_line(e.value)
    assert msg and "\n" not in msg, msg
    return msg
