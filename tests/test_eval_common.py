"""Shared builders for the eval tests: a tiny prepare-like artifact and an eval config.

The artifact has what the eval stage reads: world.json, data/ (mc_questions, two_turn,
preferences_test) and two tiny Mistral models (hidden 32, 2 layers) with the tiny world's
tokenizer, saved as HF directories. The models are untrained (seeded): enough to exercise every
code path, not to score well.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

CONF = Path(__file__).resolve().parents[1] / "conf"


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def build_tiny_artifact(root: Path, n_entities: int = 6) -> Path:
    """World, data files and two tiny models (`base`, `instruct`) under `root`."""
    from types import SimpleNamespace

    from c2f_exp.tinyworld import data
    from c2f_exp.tinyworld.models import build_model
    from c2f_exp.tinyworld.tokenizer import train_tokenizer
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
    arch = SimpleNamespace(
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        max_position_embeddings=256,
    )
    for seed, role in enumerate(("base", "instruct")):
        model = build_model(tok, arch, seed)
        model.save_pretrained(root / role)
        tok.save_pretrained(root / role)
    return root


# The fixtures live in tests/conftest.py (`tiny_artifact`, `torch_one_thread`); the eval tests
# use them from there. test_mt_bench.py / test_mt_bench_openai.py still import `tiny_artifact`
# and `one_torch_thread` from here: kept for them (`one_torch_thread` autouse, as before).
@pytest.fixture(autouse=True)
def one_torch_thread(torch_one_thread):
    """Autouse alias of conftest's `torch_one_thread` for the modules that import it."""
    yield


def __getattr__(name: str):  # PEP 562: not in dir(), so pytest does not register it twice here
    if name == "tiny_artifact":
        from tests.conftest import tiny_artifact

        return tiny_artifact
    raise AttributeError(name)


def eval_cfg(overrides: dict | None = None, group: str = "tinyworld"):
    """Root-like config with `eval` from conf/eval/<group>.yaml merged into `EvalConf`."""
    from c2f_exp.evaluation.config import EvalConf

    ev = OmegaConf.merge(
        OmegaConf.structured(EvalConf), OmegaConf.load(CONF / "eval" / f"{group}.yaml")
    )
    cfg = OmegaConf.create(
        {
            "seed": 0,
            "stages": ["prepare", "eval"],
            "data": {"source": "tinyworld"},
            "model": {"base": {"path": None}, "instruct": {"path": None}},
        }
    )
    with open_dict(cfg):
        cfg.eval = ev
    for key, value in (overrides or {}).items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def test_tiny_artifact_models_load_with_bos(tiny_artifact):
    from c2f_exp.evaluation.models import ModelRef, load

    path = str(tiny_artifact / "base")
    model, tok = load(ModelRef("base", path, False, path), "float32", "cpu")
    ids = tok("tell me about the x .").input_ids
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert tok(chat, add_special_tokens=False).input_ids.count(tok.bos_token_id) == 1
    assert tok.padding_side == "left" and not model.training
