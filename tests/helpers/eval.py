"""The eval stage's test builders: a tiny prepare-like artifact, an eval config, a context.

The artifact has what the eval stage reads: world.json, data/ (mc_questions, two_turn,
preferences_test) and two tiny Mistral models (hidden 32, 2 layers) with the tiny world's
tokenizer, saved as HF directories. The models are untrained (seeded): enough to exercise every
code path, not to score well. The `tiny_artifact` fixture (tests/conftest.py) builds it once.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from tests.helpers import CONF, MICRO, check, compose_root


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def build_tiny_artifact(root: Path, n_entities: int = 6) -> Path:
    """World, data files and two tiny models (`base`, `instruct`) under `root`."""
    from types import SimpleNamespace

    from c2f_exp.tinyworld import data
    from c2f_exp.tinyworld.tokenizer import train_tokenizer
    from c2f_exp.tinyworld.training import build_model
    from c2f_exp.tinyworld.world import generate_world

    world = generate_world(0, n_entities, 0.5)
    root.mkdir(parents=True, exist_ok=True)
    (root / "world.json").write_text(world.to_json())
    d = root / "data"
    d.mkdir(exist_ok=True)
    _jsonl(d / "mc_questions.jsonl", data.multiple_choice(world, world.heldout_entities))
    _jsonl(d / "two_turn.jsonl", data.two_turn_questions(world, world.entities, 1))
    _jsonl(d / "preferences_test.jsonl", data.preference_pairs(world, world.entities, 2, 2))
    docs = data.pretraining_corpus(world, 50, 3)
    tok = train_tokenizer(docs, world.vocabulary())
    arch = SimpleNamespace(**MICRO)
    for seed, role in enumerate(("base", "instruct")):
        model = build_model(tok, arch, seed)
        model.save_pretrained(root / role)
        tok.save_pretrained(root / role)
    return root


def eval_root(overrides: dict | None = None, group: str = "tinyworld", hub: bool | None = None):
    """The root DictConfig of a `stages=[prepare,eval]` run with `eval=<group>`, then the dotted
    `overrides` set (`{"eval.lm_eval.limit": 3}`; a bad choice fails here, naming the key).

    `hub`: compose the hub run (`+experiment=mistral_c2f`: hub models and data), as a group
    on FastChat's questions needs (general11); default: whether `group` is one."""
    if hub is None:
        from c2f_exp.evaluation.config import EvalConf

        ev = OmegaConf.merge(
            OmegaConf.structured(EvalConf), OmegaConf.load(CONF / "eval" / f"{group}.yaml")
        )
        hub = ev.mt_bench.source == "fastchat"
    run = ["+experiment=mistral_c2f"] if hub else []
    cfg = compose_root([*run, f"eval={group}", "stages=[prepare,eval]"])
    for key, value in (overrides or {}).items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def eval_cfg(overrides: dict | None = None, group: str = "tinyworld", hub: bool | None = None):
    """The typed config (`C2FConfig`) the eval stage gets: `eval_root` checked as the pipeline
    checks it (`tests.helpers.check`: class rules, then the rules between groups)."""
    return check(eval_root(overrides, group, hub))


def make_ctx(cfg, artifact: Path, tmp: Path, upstream: dict | None = None):
    """A StageContext as the pipeline builds it (`cfg`: the typed config, as `eval_cfg` gives),
    with the prepare artifact upstream."""
    from omegaconf import DictConfig

    from c2f_exp.core.tracking import Tracker
    from c2f_exp.stages import StageContext

    if isinstance(cfg, DictConfig):  # stages get the typed config, never a DictConfig
        cfg = check(cfg)
    run = tmp / "run"
    tracker = Tracker(OmegaConf.create({"backend": "none", "mode": "disabled"}), run, {}, "g", "n")
    tracker.stage("eval", run / "eval")
    ups = {"prepare": {"path": str(artifact), "config_hash": "p"}, **(upstream or {})}
    out = tmp / "artifact"
    out.mkdir(parents=True)
    return StageContext(cfg, run, run / "eval", tmp / "work", tracker, ups), out


def _prompts() -> dict[str, dict]:
    def p(name: str, template: str) -> dict:
        return {
            "name": name,
            "type": "single",
            "system_prompt": f"SYS {name}",
            "prompt_template": template,
            "output_format": "[[rating]]",
        }

    return {
        x["name"]: x
        for x in (
            p("single-v1", "Q: {question} A: {answer}"),
            p("single-math-v1", "Q: {question} REF: {ref_answer_1} A: {answer}"),
            p(
                "single-v1-multi-turn",
                "Q1: {question_1} A1: {answer_1} Q2: {question_2} A2: {answer_2}",
            ),
            p(
                "single-math-v1-multi-turn",
                "Q1: {question_1} R1: {ref_answer_1} A1: {answer_1} "
                "Q2: {question_2} R2: {ref_answer_2} A2: {answer_2}",
            ),
        )
    }
