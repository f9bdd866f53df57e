"""Checkpoint and resume of the transformers trainers (c2f_exp/core/trainer_resume.py): prepare's
pretraining and SFT, and the reward model's Bradley-Terry training.

An interrupted trainer, run again with the same work dir, continues from its newest complete
checkpoint and ends with the weights of an uninterrupted run; a half-written checkpoint is
passed over. The kill -9 versions through the CLI are in test_faults.py (slow)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers

from c2f_exp.core import trainer_resume
from c2f_exp.reward import model as rmod
from c2f_exp.tinyworld import data
from c2f_exp.tinyworld import training as models
from c2f_exp.tinyworld.tokenizer import train_tokenizer
from c2f_exp.tinyworld.world import generate_world
from tests.helpers.reward import MICRO_ARCH


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def world_tok():
    world = generate_world(0, 12)
    docs = data.pretraining_corpus(world, 60, 3)
    return world, docs, train_tokenizer(docs, world.vocabulary())


def _interrupt_at(monkeypatch, n: int) -> None:
    """Make the n-th optimizer step of any Trainer raise (a crash mid-training)."""
    real, calls = transformers.Trainer.training_step, [0]

    def step(self, *a, **k):
        calls[0] += 1
        if calls[0] == n:
            raise Interrupted(f"step {n}")
        return real(self, *a, **k)

    monkeypatch.setattr(transformers.Trainer, "training_step", step)


def _pretrain(tok, docs, workdir: Path, save_steps: int):
    torch.manual_seed(0)
    model = models.build_model(tok, MICRO_ARCH, 0)
    tcfg = SimpleNamespace(
        steps=6, lr=5e-3, batch_size=4, block_size=32, warmup_steps=1, save_steps=save_steps
    )
    models.pretrain(model, tok, docs, tcfg, workdir, 0)
    return model


def _same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=1e-6, msg=k)


def test_killed_pretraining_resumes_to_the_uninterrupted_weights(
    world_tok, tmp_path, monkeypatch, caplog
):
    _, docs, tok = world_tok
    ref = _pretrain(tok, docs, tmp_path / "ref", save_steps=2)
    # writing checkpoints does not change the training: the same weights as with none
    _same_weights(_pretrain(tok, docs, tmp_path / "none", save_steps=0), ref)
    with monkeypatch.context() as m:
        _interrupt_at(m, 5)  # checkpoint-4 is on disk, step 5 dies
        with pytest.raises(Interrupted):
            _pretrain(tok, docs, tmp_path / "work", save_steps=2)
    assert trainer_resume.last_checkpoint(tmp_path / "work").endswith("checkpoint-4")
    with caplog.at_level(logging.INFO, logger="c2f_exp.core.trainer_resume"):
        resumed = _pretrain(tok, docs, tmp_path / "work", save_steps=2)
    assert "resuming from" in caplog.text and "checkpoint-4" in caplog.text
    _same_weights(resumed, ref)
    # without checkpoints the same crash leaves nothing to resume from
    with monkeypatch.context() as m:
        _interrupt_at(m, 3)
        with pytest.raises(Interrupted):
            _pretrain(tok, docs, tmp_path / "off", save_steps=0)
    assert trainer_resume.last_checkpoint(tmp_path / "off") is None


def test_a_finished_trainer_rerun_trains_no_further(world_tok, tmp_path, monkeypatch):
    _, docs, tok = world_tok
    first = _pretrain(tok, docs, tmp_path / "work", save_steps=4)  # saves 4 and the end (6)
    assert trainer_resume.last_checkpoint(tmp_path / "work").endswith("checkpoint-6")
    _interrupt_at(monkeypatch, 1)  # any training step in the rerun would raise
    again = _pretrain(tok, docs, tmp_path / "work", save_steps=4)
    _same_weights(again, first)


def test_a_half_written_checkpoint_is_passed_over(tmp_path, caplog):
    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-6" / "trainer_state.json").write_text('{"global_st')  # cut off
    (tmp_path / "checkpoint-x").mkdir()
    assert trainer_resume.last_checkpoint(tmp_path).endswith("checkpoint-4")
    (tmp_path / "checkpoint-4" / "trainer_state.json").unlink()  # killed before its state file
    assert trainer_resume.last_checkpoint(tmp_path).endswith("checkpoint-2")
    assert "incomplete checkpoint" in caplog.text
    assert trainer_resume.last_checkpoint(tmp_path / "absent") is None


def test_checkpoint_args():
    assert trainer_resume.checkpoint_args(0) == {"save_strategy": "no"}
    on = trainer_resume.checkpoint_args(50)
    assert on["save_strategy"] == "steps" and on["save_steps"] == 50
    assert on["save_total_limit"] == 1


def test_killed_reward_training_resumes_to_the_uninterrupted_weights(
    world_tok, tmp_path, monkeypatch, caplog
):
    world, _, tok = world_tok
    pairs = data.preference_pairs(world, world.train_entities, 1, 4)
    tcfg = SimpleNamespace(
        batch_size=4, grad_accum=1, lr=1e-3, epochs=1, max_steps=5, warmup_ratio=0.1,
        weight_decay=0.0, max_length=128, center_rewards_coefficient=0.01, bf16=False,
        gradient_checkpointing=False, save_steps=2,
    )  # fmt: skip
    base = tmp_path / "base"
    models.build_model(tok, MICRO_ARCH, 0).save_pretrained(base)
    tok.save_pretrained(base)

    def train(workdir: Path):
        model, rtok = rmod.init_reward_model(str(base), "plain", 0)
        rmod.train_reward_model(model, rtok, pairs, "plain", tcfg, workdir, 0)
        return model

    ref = train(tmp_path / "ref")
    with monkeypatch.context() as m:
        _interrupt_at(m, 4)
        with pytest.raises(Interrupted):
            train(tmp_path / "work")
    with caplog.at_level(logging.INFO, logger="c2f_exp.core.trainer_resume"):
        resumed = train(tmp_path / "work")
    assert "reward model training: resuming from" in caplog.text
    assert "checkpoint-2" in caplog.text
    _same_weights(resumed, ref)
