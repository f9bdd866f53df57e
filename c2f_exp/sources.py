"""The data-source seam: where a run's prompts, preference pairs, eval data and models come from.

Two sources, one registry keyed by the config choice:

* `TinyWorldSource` (`tinyworld`): everything is built by the `prepare` stage -- the world, its
  data files (`<prepare artifact>/data/`, c2f_exp/core/layout.py) and the tiny `base` / `instruct`
  models -- and the tiny world's gold scorer knows every prompt.
* `HubSource` (`hub`): models by path or hub id, HH-RLHF-style data sets, FastChat's MT-Bench
  questions; no gold scorer.

Three config keys make the same tiny-vs-hub choice for different things, and all three ask this
one registry (`source_for(cfg, key)`): `data.source` (PPO prompts, the default), `model.source`
(the models a run starts from: what `prepare` does) and `reward.source` (the reward model's
preference pairs). `eval.mt_bench.source` names the same split with `fastchat` for hub data.
A source is stateless, so one instance per choice serves every key.

Callers ask a source for data (`ppo_prompts`, `preference_pairs`, `model_refs`), run its checks
of the outside world at preflight (`check_models`, `check_data`, `check_reward_data`,
`check_prompts`) or read what it can do (`builds_models`, `reads_prepare`, `has_gold_scorer`);
they never compare its name (tests/test_sources.py checks every stage package and config.py).
A source holds no config rules: what a choice of source requires of other keys (hub models need
paths, tiny models need the tiny world's data) is config.py's, phrased in these capabilities.
Layer 2 (beside the stage packages' parts): it reads `reward.preferences` for hub pairs, so any
stage part other than that one, config.py and the stage modules may import it
(tests/test_layers.py).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar

from c2f_exp.core import layout
from c2f_exp.core.errors import ConfigError, bad_value

ROLES = ("base", "instruct")  # the models a run starts from
HH_ROLES = {"user": "Human", "assistant": "Assistant"}  # HH-RLHF's transcript speakers


def hh_transcript(turns: list[dict[str, str]]) -> str:
    """Chat turns as the HH-RLHF transcript a base model continues, ready for the next reply:
    "\n\nHuman: q\n\nAssistant: a ... \n\nAssistant:" (the format PPO trains the Coarse
    Actor on, and the one eval prompts base models with)."""
    return "".join(f"\n\n{HH_ROLES[t['role']]}: {t['content']}" for t in turns) + "\n\nAssistant:"


Prompts = tuple[list[str], list, list[dict], str]  # texts, what the RM reads, held-out rows, where


class DataSource:
    """What one source provides; the base class holds the no-op defaults."""

    name: ClassVar[str]
    builds_models: ClassVar[bool] = False  # prepare builds base/instruct from model.arch
    reads_prepare: ClassVar[bool] = False  # prompts, pairs and eval data are prepare's files
    has_gold_scorer: ClassVar[bool] = False  # the tiny world's gold scorer knows its prompts
    # where a base model's reply ends when it goes on to write the next turn itself (rollouts
    # and eval answers stop there as at EOS); None: the prompts are not transcripts
    turn_marker: ClassVar[str | None] = None

    def prepare_subtree(self, cfg: Any) -> dict[str, Any]:
        """The part of the config `prepare`'s artifact depends on besides model and seed."""
        raise NotImplementedError

    def check_models(self, cfg: Any) -> None:
        """Preflight of `model.source`: the starting models can be found (I/O)."""

    def check_data(self, cfg: Any) -> None:
        """Preflight of `data.source`: its data sets can be found (I/O)."""

    def check_reward_data(self, r: Any) -> None:
        """Preflight of `reward.source` for a reward model to train (I/O)."""

    def check_prompts(self, cfg: Any) -> None:
        """Preflight of the coarse stage's prompts: each fits the policy's context (I/O)."""

    def model_refs(self, cfg: Any) -> dict[str, str]:
        """role -> resolved path or hub id of the models a run starts from (not built here)."""
        raise NotImplementedError

    def ppo_prompts(self, cfg: Any, prepared: Path | None) -> Prompts:
        """(policy prompts, what the reward model reads for each, held-out rows {"prompt",
        "entity"} for the gold check, where they came from); `prepared`: prepare's artifact."""
        raise NotImplementedError

    def preference_pairs(self, r: Any, prepared: Path | None) -> tuple[list[dict], list[dict]]:
        """(train, test) preference pairs {"prompt", "chosen", "rejected", ...} of `reward` r."""
        raise NotImplementedError


class TinyWorldSource(DataSource):
    """The embedded tiny world: prepare builds data, tokenizer and models (README)."""

    name = "tinyworld"
    builds_models = reads_prepare = has_gold_scorer = True

    def prepare_subtree(self, cfg: Any) -> dict[str, Any]:
        return {"world": cfg.data.world}

    def ppo_prompts(self, cfg: Any, prepared: Path | None) -> Prompts:
        from c2f_exp.tinyworld.world import World

        c, path = cfg.coarse, layout.data_file(prepared, "ppo_prompts.jsonl")
        rows = layout.read_jsonl(path) if path.is_file() else []
        world = World.load(layout.world_file(prepared))
        keep = set(world.train_entities if c.prompt_split == "train" else world.entities)
        texts = [r["prompt"] for r in rows if r["entity"] in keep]
        held = [r for r in rows if r["entity"] in set(world.heldout_entities)][: c.eval_prompts]
        return texts, texts, held, str(path)

    def preference_pairs(self, r: Any, prepared: Path | None) -> tuple[list[dict], list[dict]]:
        """prepare's data/preferences_*.jsonl; the BT margin is `reward.train.margin_scale`
        times the gold difference the file records."""
        from c2f_exp.reward.preferences import require_pairs

        out = []
        for split, limit in (("train", r.max_train_pairs), ("test", r.max_test_pairs)):
            path = layout.data_file(prepared, f"preferences_{split}.jsonl")
            if not path.is_file():
                raise ConfigError(
                    f"{path} does not exist; run the prepare stage, or point "
                    "reward.path at a trained reward model"
                )
            m = r.train.margin_scale
            rows = [
                {
                    "prompt": p["prompt"],
                    "chosen": p["chosen"],
                    "rejected": p["rejected"],
                    "margin": m * (p["gold_chosen"] - p["gold_rejected"]) if m else 0.0,
                }
                for p in layout.read_jsonl(path)[:limit]
            ]
            out.append(require_pairs(rows, str(path)) if split == "test" or not r.path else rows)
        return out[0], out[1]


class HubSource(DataSource):
    """Models by path or hub id, HH-RLHF-style preference data, FastChat's MT-Bench files."""

    name = "hub"
    turn_marker = "\n\nHuman:"

    def prepare_subtree(self, cfg: Any) -> dict[str, Any]:
        return {"hub_data": cfg.data.hub}

    def check_models(self, cfg: Any) -> None:
        from c2f_exp.core import hub

        refs = {}
        for role in ROLES:
            spec, key = getattr(cfg.model, role), f"model.{role}.path"
            refs[role] = ref = hub.resolve_model(spec.path, key, spec.revision)
            if layout.rehearsing(cfg):  # tiny-width copies: config.json and tokenizer only
                hub.check_config_json(ref, key)
            else:
                hub.check_local_weights(ref, key)
        from c2f_exp.core.tokenizers import check_pair

        check_pair(refs, cfg)  # one vocabulary and model class; EOS; a chat template if needed

    def check_data(self, cfg: Any) -> None:
        from c2f_exp.core import hub
        from c2f_exp.reward.preferences import check_hh_file

        keys = ["prompt_dataset"]
        r, pref = cfg.reward, cfg.data.hub.preference_dataset
        if not ("reward" in cfg.stages and not r.path and r.dataset and r.dataset != pref):
            keys.append("preference_dataset")  # unless reward.dataset replaces it (checked there)
        for key in keys:
            if getattr(cfg.data.hub, key):
                ref = hub.resolve_dataset(getattr(cfg.data.hub, key), f"data.hub.{key}")
                check_hh_file(ref, f"data.hub.{key}")

    def check_reward_data(self, r: Any) -> None:
        from c2f_exp.core import hub
        from c2f_exp.reward.preferences import check_hh_file

        check_hh_file(hub.resolve_dataset(r.dataset, "reward.dataset"), "reward.dataset")

    def check_prompts(self, cfg: Any) -> None:
        """No PPO prompt (with `coarse.prompt_prefix`) leaves fewer than the largest rollout
        limit of the policy's context. Tokens never outnumber UTF-8 bytes (+ BOS), so only
        prompts longer than that in bytes are tokenized."""
        from c2f_exp.coarse.schedule_config import max_limit
        from c2f_exp.core import hub
        from c2f_exp.core.errors import ConfigError

        if not cfg.model.base.path or not cfg.data.hub.prompt_dataset:
            return  # config.validate / check_data name what is missing
        ref = hub.resolve_model(cfg.model.base.path, "model.base.path", cfg.model.base.revision)
        context = hub.check_config_json(ref, "model.base.path").get("max_position_embeddings")
        top = max_limit(cfg.length_schedule)
        if not context:
            return
        room = int(context) - int(top)
        prefix = str(cfg.coarse.prompt_prefix).replace("{bos}", "")
        texts = self.ppo_prompts(cfg, None)[0]
        long = [(i, prefix + x) for i, x in enumerate(texts) if len((prefix + x).encode()) >= room]
        if not long:
            return
        from c2f_exp.core.tokenizers import load_tokenizer

        tok = load_tokenizer(ref)
        for i, text in long:
            n = len(tok(text).input_ids)
            if n > room:
                raise ConfigError(
                    f"data.hub.prompt_dataset={cfg.data.hub.prompt_dataset}: prompt {i} has {n} "
                    f"tokens, and with rollouts of up to {top} (length_schedule) it does not fit "
                    f"the policy's context of {context}; drop long rows from the data set or "
                    "lower length_schedule.l_max"
                )

    def model_refs(self, cfg: Any) -> dict[str, str]:
        from c2f_exp.core import hub

        m = cfg.model
        return {
            r: hub.resolve_model(getattr(m, r).path, f"model.{r}.path", getattr(m, r).revision)
            for r in ROLES
        }

    def ppo_prompts(self, cfg: Any, prepared: Path | None) -> Prompts:
        """HH-RLHF transcripts (`data.hub.prompt_dataset`): the base model continues them."""
        from c2f_exp.core import hub
        from c2f_exp.reward.preferences import hh_pairs

        ref = hub.resolve_dataset(cfg.data.hub.prompt_dataset, "data.hub.prompt_dataset")
        limit = cfg.model.rehearsal.max_rows if layout.rehearsing(cfg) else None
        turns = [r["prompt"] for r in hh_pairs(ref, cfg.data.hub.prompt_split, limit)]
        texts = [hh_transcript(ts) for ts in turns]
        return texts, turns, [], f"data.hub.prompt_dataset={ref}"

    def preference_pairs(self, r: Any, prepared: Path | None) -> tuple[list[dict], list[dict]]:
        from c2f_exp.reward.preferences import hub_pairs

        return hub_pairs(r)


# choice -> source, per config key; `data.source`, `model.source` and `reward.source` share one.
SOURCES: dict[str, type[DataSource]] = {"tinyworld": TinyWorldSource, "hub": HubSource}
BY_KEY: dict[str, dict[str, type[DataSource]]] = {
    "eval.mt_bench.source": {"tinyworld": TinyWorldSource, "fastchat": HubSource},
}
_INSTANCES = {cls: cls() for cls in SOURCES.values()}


def get_source(name: Any, key: str = "data.source") -> DataSource:
    """The source the config key `key` names with `name`; ConfigError naming the key if none."""
    table = BY_KEY.get(key, SOURCES)
    if name not in table:
        raise bad_value(key, name, "one of " + ", ".join(table))
    return _INSTANCES[table[name]]


def source_for(cfg: Any, key: str = "data.source") -> DataSource:
    """The source of the root config `cfg` for `key` (a dotted path ending in `source`)."""
    return get_source(functools.reduce(getattr, key.split("."), cfg), key)
