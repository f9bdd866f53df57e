"""Typed config schemas (Hydra ConfigStore): a wrong key, type or choice fails at composition.

Where things are said once:
* Defaults live in the dataclasses (here and in each group's `*config.py`), with the comment
  saying why. They are the values `python -m c2f_exp` runs: the default option of each group
  (conf/config.yaml's defaults list) may restate a default beside its knob for the reader, never
  change it; other options (merger=ties, eval=general11, ...) hold only what they change.
  tests/test_schema_defaults.py fails on any YAML value that disagrees with its schema default.
* Choices are `Choice` enums (c2f_exp/core/choices.py; OmegaConf has no `Literal`), so OmegaConf
  rejects a bad one at composition and cli_errors names the key and the options.
* Cross-field rules (l_min <= l_max, a filter only for knowledge_residue, ...) run once, before
  any stage, from `validate()` (called by the pipeline and, for every job of a grid sweep, by
  sweeping.validate_jobs); stage preflights only check the outside world (paths, hub, files).

The root schema `c2f_schema` is the first entry of `conf/config.yaml`'s defaults list, so every
group's YAML is merged into these dataclasses and OmegaConf names the offending key.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from c2f_exp.coarse.config import CoarseConf, DistributedConf
from c2f_exp.coarse.schedule_config import LengthScheduleConf
from c2f_exp.core.choices import DTYPES, DType, Source, choice  # noqa: F401  (DTYPES re-exported)
from c2f_exp.core.errors import bad_value
from c2f_exp.core.secrets import check_no_secret_keys
from c2f_exp.evaluation.config import EvalConf
from c2f_exp.merge.config import MergerConf
from c2f_exp.reward.config import RewardConf
from c2f_exp.sources import source_for

STAGE_ORDER = ("prepare", "reward", "coarse", "merge", "eval")
TrackerBackend = choice("TrackerBackend", ("wandb", "mlflow"), __name__)
TrackerMode = choice("TrackerMode", ("offline", "online", "disabled"), __name__)


@dataclass
class ModelSpec:
    """One model: a local directory or a hub id; `null` = built by the `prepare` stage."""

    path: str | None = None
    revision: str | None = None
    dtype: DType = DType.float32
    trust_remote_code: bool = False  # never on by default: it runs code from the model repo


@dataclass
class ArchConf:
    """Architecture of a locally built tiny Mistral model."""

    hidden_size: int = 128
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 512


@dataclass
class TrainConf:
    steps: int = 100
    lr: float = 1e-3
    batch_size: int = 16
    block_size: int = 128
    warmup_steps: int = 10
    adam_beta2: float = 0.999
    # a checkpoint every N steps (and at the end) in the stage's work dir; a killed prepare
    # resumes from it (trainer_resume.py). 0: none
    save_steps: int = 100


def _pretrain() -> TrainConf:
    # adam_beta2 0.95 vs 0.999: leaves the recall plateau earlier and more reliably (one seed:
    # held-out true-vs-false 92% at step 500, 100% at 800; 0.999: 70% and 94%)
    return TrainConf(steps=1000, lr=5e-3, warmup_steps=30, adam_beta2=0.95, save_steps=250)


@dataclass
class RehearsalConf:
    """`debug=micro` on hub models: the 7B code path at tiny widths (docs/gpus.md).

    `prepare` builds base and instruct of the configured classes from their config.json with
    these widths (random weights, the real tokenizers and chat templates; no weights loaded),
    and the later stages read at most these many rows and questions."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    max_rows: int = 48  # rows read from each preference / prompt data set
    mt_bench_per_category: int = 1  # MT-Bench questions per category
    lm_eval_limit: int = 4  # examples per lm-eval task
    max_new_tokens: int = 16  # MT-Bench answer tokens per turn


@dataclass
class ModelConf:
    name: str = MISSING
    source: Source = Source.tinyworld  # tinyworld: built by `prepare`; hub: loaded by path/id
    base: ModelSpec = field(default_factory=ModelSpec)
    instruct: ModelSpec = field(default_factory=ModelSpec)
    arch: ArchConf = field(default_factory=ArchConf)
    pretrain: TrainConf = field(default_factory=_pretrain)  # causal-LM pretraining (tiny)
    # short-answer and two-turn SFT (tiny)
    sft: TrainConf = field(default_factory=lambda: TrainConf(steps=300, lr=3e-4))
    rehearsal: RehearsalConf | None = None  # hub models only; debug=micro sets it


@dataclass
class WorldConf:
    seed: int = 0
    n_entities: int = 100
    heldout_fraction: float = 0.3
    n_docs: int = 6000
    p_prompt: float = 0.5
    p_explain: float = 0.3
    sft_per_entity: int = 6
    sft_dialogues_per_entity: int = 4
    pref_per_entity: int = 8
    eval_max_new_tokens: int = 48


@dataclass
class HubDataConf:
    preference_dataset: str | None = None
    preference_split: str = "train"
    prompt_dataset: str | None = None
    prompt_split: str = "train"


@dataclass
class DataConf:
    name: str = MISSING
    source: Source = Source.tinyworld
    world: WorldConf = field(default_factory=WorldConf)
    hub: HubDataConf = field(default_factory=HubDataConf)


@dataclass
class MlflowConf:
    # null: $MLFLOW_TRACKING_URI when set, else sqlite:///<paths.root_dir>/outputs/mlflow.db
    tracking_uri: str | None = None
    experiment: str | None = None  # null: tracker.project
    timeout_s: float = 5.0  # the server must answer /health this fast at preflight (no hang)


@dataclass
class TrackerConf:
    """`tracker=wandb|mlflow|many|none` (conf/tracker/): which backends, and their settings."""

    backends: list[TrackerBackend] = field(default_factory=lambda: [TrackerBackend.wandb])
    mode: TrackerMode = TrackerMode.offline  # wandb; online: needs WANDB_API_KEY
    project: str = "c2f_exp"  # wandb project; the MLflow experiment unless mlflow.experiment
    entity: str | None = None  # wandb
    group: str | None = None  # null: experiment_name; in a multirun `<sweep name>-<sweep id>`
    tags: list[str] = field(default_factory=list)
    mlflow: MlflowConf = field(default_factory=MlflowConf)


@dataclass
class PathsConf:
    root_dir: str = MISSING
    output_dir: str = MISSING
    cache_dir: str = MISSING


@dataclass
class SweepConf:
    """What a ready-made sweep (`sweep=<name>`, files in sweeps/) sets besides its parameters."""

    name: str | None = None  # names the tracker group (with the sweep's id) and job_type
    # A manifest metric `<stage>/<metric key>` returned to Hydra sweepers that optimise (optuna),
    # e.g. eval/fine/tinyworld_about/gold_total. null: the job returns nothing.
    objective: str | None = None
    # Free variables a sweep searches over and interpolates into real keys, e.g.
    # merger.coefficient: [${sweep.vars.lambda_first}, ${sweep.vars.lambda_last}]
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass
class C2FConfig:
    experiment_name: str = "tiny_c2f"
    seed: int = 0
    stages: list[str] = field(default_factory=lambda: list(STAGE_ORDER))
    force: bool = False  # recompute stages even when a cached artifact matches
    plan: bool = False  # print models, rows, token budgets and GPU memory per stage; run nothing
    model: ModelConf = field(default_factory=ModelConf)
    data: DataConf = field(default_factory=DataConf)
    tracker: TrackerConf = field(default_factory=TrackerConf)
    paths: PathsConf = field(default_factory=PathsConf)
    reward: RewardConf = field(default_factory=RewardConf)
    length_schedule: LengthScheduleConf = field(default_factory=LengthScheduleConf)
    coarse: CoarseConf = field(default_factory=CoarseConf)
    distributed: DistributedConf = field(default_factory=DistributedConf)
    merger: MergerConf = field(default_factory=MergerConf)
    eval: EvalConf = field(default_factory=EvalConf)
    sweep: SweepConf = field(default_factory=SweepConf)


# Free-form {name: value} dicts: open (not struct) so that `eval.models='{a: /p, b: /q}'` adds
# keys like `+eval.models.a=/p` does (Hydra merges a dict override into a struct node, which
# refuses new keys); their values stay typed.
FREE_FORM = ("eval.models", "eval.chat", "merger.module_overrides", "sweep.vars")


@functools.cache
def run_id() -> str:
    """Six hex digits drawn once per process: `${run_id:}` in conf/config.yaml's
    `hydra.run.dir`, so two runs started in the same second get separate run dirs."""
    return secrets.token_hex(3)


def register() -> None:
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id)
    node = OmegaConf.structured(C2FConfig)
    for key in FREE_FORM:
        OmegaConf.set_struct(OmegaConf.select(node, key), False)
    ConfigStore.instance().store(name="c2f_schema", node=node)


def unknown_keys(node: Any, path: str = "") -> Iterator[tuple[str, list[str]]]:
    """(dotted key, the schema's keys there) for every key the typed schema does not declare.

    Hydra's `+key=value` adds keys even to typed nodes, so `+model.pretrian.steps=5` would be
    accepted and ignored; free-form dict fields (eval.models, sweep.vars, ...) stay open.
    """
    t = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(t):
        return
    fields = [f.name for f in dataclasses.fields(t)]
    for k in node:
        if k == "hydra" and not path:
            continue  # the Hydra node of a sweep job's composed config
        if k not in fields:
            yield f"{path}{k}", fields
        elif isinstance(node._get_node(k), DictConfig):
            yield from unknown_keys(node._get_node(k), f"{path}{k}.")


def validate(cfg: DictConfig, implemented: tuple[str, ...]) -> None:
    """The checks OmegaConf's types cannot express, for the whole config and each listed stage's
    group, once before any stage runs. Raises ConfigError naming key and fix."""
    check_no_secret_keys(cfg)  # first: the errors below echo values
    for key, known in unknown_keys(cfg):
        name = key.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {key[: -len(name)]}{close[0]}?" if close else "remove it"
        raise bad_value(key, OmegaConf.select(cfg, key), "a key of the config schema", hint)
    for i, s in enumerate(cfg.stages):
        if s not in STAGE_ORDER:
            raise bad_value(f"stages[{i}]", s, "one of " + ", ".join(STAGE_ORDER))
        if s not in implemented:
            raise bad_value(
                f"stages[{i}]",
                s,
                "an implemented stage (" + ", ".join(implemented) + ")",
                "this stage is not built yet: drop it from stages",
            )
    if list(cfg.stages) != sorted(cfg.stages, key=STAGE_ORDER.index):
        raise bad_value("stages", list(cfg.stages), "in pipeline order " + ", ".join(STAGE_ORDER))
    if len(set(cfg.stages)) != len(cfg.stages):
        raise bad_value("stages", list(cfg.stages), "a list without repeats")
    if not cfg.stages:
        raise bad_value("stages", [], "a non-empty list", "e.g. stages=[prepare,reward]")
    _check_seeds(cfg)
    _validate_groups(cfg)
    objective = cfg.sweep.objective
    if objective is not None and (
        "/" not in objective or objective.split("/", 1)[0] not in cfg.stages
    ):
        raise bad_value(
            "sweep.objective",
            objective,
            "'<stage>/<metric key of that stage in manifest.json>' for a stage of this run "
            f"({', '.join(cfg.stages)})",
            "e.g. sweep.objective=eval/fine/tinyworld_about/gold_total",
        )
    source_for(cfg, "model.source").validate_model(cfg)  # tiny: arch, world; hub: paths


# Every seed of the config: numpy (transformers.set_seed) takes only 0 <= seed < 2**32, and
# stages derive seeds by adding small offsets (world seed + 7, ...): 31 bits leave room.
SEED_KEYS = ("seed", "data.world.seed", "coarse.seed", "merger.seed", "eval.seed")
MAX_SEED = 2**31 - 1


def _check_seeds(cfg: DictConfig) -> None:
    for key in SEED_KEYS:
        v = OmegaConf.select(cfg, key)
        if v is not None and not 0 <= v <= MAX_SEED:
            raise bad_value(
                key, v, f"an integer in [0, {MAX_SEED}]", "numpy and torch seed from 32 bits"
            )


def _validate_groups(cfg: DictConfig) -> None:
    """Each listed stage's own group checks (no I/O), before any stage runs."""
    from c2f_exp.coarse.config import validate_coarse
    from c2f_exp.evaluation.config import validate_eval
    from c2f_exp.merge.config import validate_merger
    from c2f_exp.reward.config import validate_reward

    checks = {
        "reward": lambda: validate_reward(cfg),
        "coarse": lambda: validate_coarse(cfg),
        "merge": lambda: validate_merger(cfg.merger),
        "eval": lambda: validate_eval(cfg),
    }
    for stage in cfg.stages:
        if stage in checks:
            checks[stage]()
