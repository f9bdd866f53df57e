"""Typed config schemas (Hydra ConfigStore): a wrong key, type or choice fails at composition.

Where things are said once:
* Every default is written once: in these dataclasses (here and in each group's `*config.py`),
  with the comment beside the field saying why; `CoarseConf()` is what `python -m c2f_exp`
  runs. A YAML option (conf/<group>/<option>.yaml, the default ones included) is merged onto the
  schema and holds only what it changes: `name`, and values that differ from the schema's.
  tests/test_schema_defaults.py fails on any YAML value that restates its schema default, and
  on a default option that changes a typed knob. The composed values:
  `python -m c2f_exp --cfg job` (one group: `--cfg job --package coarse`).
* Choices are `Choice` enums (c2f_exp/core/choices.py; OmegaConf has no `Literal`), so OmegaConf
  rejects a bad one at composition and cli_errors names the key and the options.
* Each rule on a value sits on its schema class, as `__post_init__` (l_min <= l_max, a filter
  only for knowledge_residue, ...), naming its key relative to the class; `typed()` runs them
  all through `OmegaConf.to_object` and names the full key (`coarse.lr`). Rules between groups
  (the model's positions vs the longest rollout, data source vs models, ...) are here, in
  `_CROSS_RULES`. `validate()` runs both once, before any stage (the pipeline; for every job of
  a grid sweep, sweeping.validate_jobs) and returns the typed config the stages get; stage
  preflights only check the outside world (paths, hub, files).

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
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict

from c2f_exp.coarse.config import CoarseConf, DistributedConf
from c2f_exp.coarse.schedule_config import LengthScheduleConf, max_limit
from c2f_exp.core.choices import DTYPES, DType, Source, choice  # noqa: F401  (DTYPES re-exported)
from c2f_exp.core.errors import (
    BadValue,
    bad_value,
    check_positive,
    check_save_steps,
    check_seed,
)
from c2f_exp.core.secrets import check_no_secret_keys
from c2f_exp.evaluation.config import EvalConf
from c2f_exp.merge.config import MergerConf
from c2f_exp.reward.config import RewardConf
from c2f_exp.sources import get_source, source_for

STAGE_ORDER = ("prepare", "reward", "coarse", "merge", "eval")
StageName = choice("StageName", STAGE_ORDER, __name__)
TrackerBackend = choice("TrackerBackend", ("wandb", "mlflow"), __name__)
TrackerMode = choice("TrackerMode", ("offline", "online", "disabled"), __name__)


@dataclass
class ModelSpec:
    """One model: a local directory or a hub id; `null` = built by the `prepare` stage."""

    path: str | None = None  # tiny world: null (built by prepare); or an existing model's dir
    revision: str | None = None
    dtype: DType = DType.float32
    trust_remote_code: bool = False  # never on by default: it runs code from the model repo


@dataclass
class ArchConf:
    """Architecture of a locally built tiny Mistral model: ~1M parameters; 4 layers train
    ~1.5x faster than 6 at equal quality."""

    hidden_size: int = 128
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 512

    def __post_init__(self) -> None:
        for k in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads"):
            check_positive(k, getattr(self, k))
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            want = "a divisor of hidden_size and a multiple of num_kv_heads"
            raise bad_value("num_heads", self.num_heads, want)


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

    def __post_init__(self) -> None:
        for k in ("steps", "lr", "batch_size", "block_size"):
            check_positive(k, getattr(self, k))
        check_save_steps("save_steps", self.save_steps)
        if self.warmup_steps < 0:
            raise bad_value("warmup_steps", self.warmup_steps, ">= 0")
        if not 0 <= self.adam_beta2 < 1:
            raise bad_value("adam_beta2", self.adam_beta2, "in [0, 1)")


def _pretrain() -> TrainConf:
    # adam_beta2 0.95 vs 0.999: leaves the recall plateau earlier and more reliably (one seed:
    # held-out true-vs-false 92% at step 500, 100% at 800; 0.999: 70% and 94%; docs/results.md,
    # prepare). A checkpoint every 250 steps (and at the end): a killed prepare resumes.
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
    base: ModelSpec = field(default_factory=ModelSpec)  # the policy's starting point
    # the partner the Knowledge Residue Merger adds the RL residue to; tiny world: built by
    # prepare (base + SFT on short answers)
    instruct: ModelSpec = field(default_factory=ModelSpec)
    arch: ArchConf = field(default_factory=ArchConf)  # tiny world only
    # causal-LM pretraining on the fact corpus (tiny world; transformers Trainer)
    pretrain: TrainConf = field(default_factory=_pretrain)
    # short-answer and two-turn SFT of the instruct model (tiny world; TRL SFTTrainer). lr 1e-3 x
    # 150 steps moved instruct so far from the base that the residue transferred worse
    # (docs/results.md, prepare)
    sft: TrainConf = field(default_factory=lambda: TrainConf(steps=300, lr=3e-4))
    rehearsal: RehearsalConf | None = None  # hub models only; debug=micro sets it


@dataclass
class WorldConf:
    """The embedded tiny world (docs/method.md §3): seeded generator, all data sets derived
    from it."""

    seed: int = 0
    n_entities: int = 100  # x 12 attributes = 1200 facts (+ 4 explainable ones each)
    heldout_fraction: float = 0.3  # entities kept out of SFT data: instruct is measured on them
    n_docs: int = 6000  # pretraining documents of 1-12 facts
    p_prompt: float = 0.5  # share of documents opened by "tell me about the X ."
    p_explain: float = 0.3  # share of explainable facts written with their "because" clause
    sft_per_entity: int = 6
    # two-turn SFT dialogues (tell me more / why): turn 2 of the two-turn set 1.5-2.8 -> ~5 of
    # 10 (docs/results.md)
    sft_dialogues_per_entity: int = 4
    pref_per_entity: int = 8
    eval_max_new_tokens: int = 48

    def __post_init__(self) -> None:
        check_seed("seed", self.seed)
        if self.n_entities < 4:
            raise bad_value("n_entities", self.n_entities, ">= 4")
        if not 0 < self.heldout_fraction < 1:
            raise bad_value("heldout_fraction", self.heldout_fraction, "strictly between 0 and 1")
        held = max(1, round(self.heldout_fraction * self.n_entities))  # world.generate_world
        if held >= self.n_entities:
            raise bad_value(
                "heldout_fraction",
                self.heldout_fraction,
                f"small enough to leave a training entity of data.world.n_entities="
                f"{self.n_entities} ({held} held out)",
                "lower it or raise data.world.n_entities",
            )
        if self.pref_per_entity < 1:
            want, why = ">= 1", "the reward model trains on these preference pairs"
            raise bad_value("pref_per_entity", self.pref_per_entity, want, why)
        check_positive("n_docs", self.n_docs)
        if self.sft_dialogues_per_entity < 0:
            want = "a number >= 0"
            raise bad_value("sft_dialogues_per_entity", self.sft_dialogues_per_entity, want)


@dataclass
class HubDataConf:
    """Hub data (`data=hub`): hub ids, or local copies' paths."""

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
    """`tracker=wandb|mlflow|many|none` (conf/tracker/): which backends, and their settings.
    The default: wandb, offline (no login, no network); upload later with
    `wandb sync <run dir>/wandb`."""

    backends: list[TrackerBackend] = field(default_factory=lambda: [TrackerBackend.wandb])
    mode: TrackerMode = TrackerMode.offline  # wandb: offline | online (WANDB_API_KEY) | disabled
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
    # run in this order; only implemented stages may be listed
    stages: list[StageName] = field(default_factory=lambda: list(StageName))
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

    def __post_init__(self) -> None:
        """Rules between the run's own fields; the groups check theirs in their classes."""
        check_seed("seed", self.seed)
        for i, s in enumerate(self.stages):
            if s not in STAGE_ORDER:
                raise bad_value(f"stages[{i}]", s, "one of " + ", ".join(STAGE_ORDER))
        if list(self.stages) != sorted(self.stages, key=STAGE_ORDER.index):
            raise bad_value(
                "stages", list(self.stages), "in pipeline order " + ", ".join(STAGE_ORDER)
            )
        if len(set(self.stages)) != len(self.stages):
            raise bad_value("stages", list(self.stages), "a list without repeats")
        if not self.stages:
            raise bad_value("stages", [], "a non-empty list", "e.g. stages=[prepare,reward]")
        objective = self.sweep.objective
        if objective is not None and (
            "/" not in objective or objective.split("/", 1)[0] not in self.stages
        ):
            raise bad_value(
                "sweep.objective",
                objective,
                "'<stage>/<metric key of that stage in manifest.json>' for a stage of this run "
                f"({', '.join(self.stages)})",
                "e.g. sweep.objective=eval/fine/tinyworld_about/gold_total",
            )


# Free-form {name: value} dicts: open (not struct) so that `eval.models='{a: /p, b: /q}'` adds
# keys like `+eval.models.a=/p` does (Hydra merges a dict override into a struct node, which
# refuses new keys); their values stay typed.
FREE_FORM = ("eval.models", "eval.chat", "merger.module_overrides", "sweep.vars")


@functools.cache
def run_id() -> str:
    """Six hex digits drawn once per process: `${run_id:}` in conf/config.yaml's
    `hydra.run.dir` and `hydra.sweep.dir`, so two runs (or sweeps) started in the same second
    get separate dirs."""
    return secrets.token_hex(3)


def register() -> None:
    if not OmegaConf.has_resolver("run_id"):
        # use_cache: the value is kept in the config, and Hydra copies that cache into every
        # sweep job's config (as for ${now:}), so joblib / submitit workers, other processes
        # with other ids, resolve the sweep dir the launcher made
        OmegaConf.register_new_resolver("run_id", run_id, use_cache=True)
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


def typed(cfg: DictConfig) -> C2FConfig:
    """The composed config as the schema's dataclasses (`OmegaConf.to_object`): interpolations
    resolved, choices as enums, and every class's `__post_init__` rules run. A rule's error
    names its key relative to its class; this puts the node's path in front."""
    node = cfg
    if "hydra" in cfg:  # the Hydra node of a sweep job's composed config: not the schema's
        node = cfg.copy()
        with open_dict(node):
            del node["hydra"]
    try:
        return OmegaConf.to_object(node)  # type: ignore[return-value]
    except BadValue as e:
        raise e.under(_failing_node(node, e)) from None


def _failing_node(node: DictConfig, err: BadValue) -> str:
    """The path of the node whose class raised `err`: the first, in the order to_object builds
    them (children before parents, fields in order), that raises the same error alone."""
    for k in node:
        child = node._get_node(k)
        if isinstance(child, DictConfig) and not child._is_none():
            found = _failing_node(child, err)
            if found is not None:
                return found
    if dataclasses.is_dataclass(OmegaConf.get_type(node)):
        try:
            OmegaConf.to_object(node)
        except BadValue as e:
            if str(e) == str(err):
                return node._get_full_key(None)
    return None  # type: ignore[return-value]


def validate(cfg: DictConfig, implemented: tuple[str, ...]) -> C2FConfig:
    """Every rule, once before any stage runs, and the typed config the stages then get.

    Order: no secrets in the config (the errors echo values), no key the schema lacks, each
    schema class's own rules (`typed`), then the rules between groups for the listed stages
    (here, in one place). Raises ConfigError naming key and fix."""
    check_no_secret_keys(cfg)  # first: the errors below echo values
    for key, known in unknown_keys(cfg):
        name = key.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {key[: -len(name)]}{close[0]}?" if close else "remove it"
        raise bad_value(key, OmegaConf.select(cfg, key), "a key of the config schema", hint)
    conf = typed(cfg)
    for i, s in enumerate(conf.stages):
        if s not in implemented:
            raise bad_value(
                f"stages[{i}]",
                s,
                "an implemented stage (" + ", ".join(implemented) + ")",
                "this stage is not built yet: drop it from stages",
            )
    _model_rules(conf)
    for stage in conf.stages:
        _CROSS_RULES.get(stage, lambda _: None)(conf)
    return conf


def _model_rules(conf: C2FConfig) -> None:
    """Models built here only know the data built with them; models from the hub need paths."""
    if source_for(conf, "model.source").builds_models:
        if not source_for(conf).reads_prepare:
            raise bad_value(
                "data.source",
                conf.data.source,
                "tinyworld when model=tiny",
                "the tiny models only know the tiny world: use data=tinyworld",
            )
        return
    for role in ("base", "instruct"):
        if not getattr(conf.model, role).path:
            raise bad_value(
                f"model.{role}.path",
                getattr(conf.model, role).path,
                "a hub id or a local model directory for model.source=hub",
            )


def _reward_rules(conf: C2FConfig) -> None:
    from c2f_exp.reward.config import RewardArchConf, validate_arch

    r, tiny_pairs = conf.reward, get_source(conf.reward.source, "reward.source").reads_prepare
    if tiny_pairs and not source_for(conf, "model.source").builds_models and not r.path:
        raise bad_value(
            "reward.source",
            r.source,
            "hub when model.source=hub",
            "the tiny world's preferences only fit the tiny models: use reward=hh_rlhf",
        )
    if not tiny_pairs and not r.path and not r.dataset:
        raise bad_value(
            "reward.dataset",
            r.dataset,
            "a hub preference data set id or local path for reward.source=hub",
            "e.g. reward.dataset=Anthropic/hh-rlhf",
        )
    if RewardArchConf.overrides(r.arch):
        validate_arch(r.arch, conf.model.arch, r.train.max_length)


def _coarse_rules(conf: C2FConfig) -> None:
    """The longest rollout fits the tiny model's positions (hub models: their problem)."""
    top = max_limit(conf.length_schedule)
    if source_for(conf, "model.source").builds_models:  # its positions: model.arch
        room = conf.model.arch.max_position_embeddings - 16  # prompts are ~8 tokens
        if top > room:
            raise bad_value(
                "length_schedule.l_max",
                top,
                f"<= {room} for model.arch.max_position_embeddings={room + 16}",
                "lower the limit or raise max_position_embeddings",
            )


def _eval_rules(conf: C2FConfig) -> None:
    """What eval reads must exist for the run's data source."""
    from c2f_exp.evaluation.config import TINYWORLD_TASKS

    lm, m, data = conf.eval.lm_eval, conf.eval.mt_bench, source_for(conf)
    if [t for t in lm.tasks if t in TINYWORLD_TASKS] and not data.reads_prepare:
        raise bad_value(
            "eval.lm_eval.tasks",
            list(lm.tasks),
            "tasks without tinyworld_*",
            "the tiny world's tasks need data=tinyworld",
        )
    mt = source_for(conf, "eval.mt_bench.source")
    if mt.reads_prepare and not data.reads_prepare and not m.question_file:
        raise bad_value(
            "eval.mt_bench.source",
            m.source,
            "fastchat for hub data",
            "or set eval.mt_bench.question_file",
        )


_CROSS_RULES = {"reward": _reward_rules, "coarse": _coarse_rules, "eval": _eval_rules}
