"""The coarse stage's checkpoints (issue 25.16): the policy is saved as safetensors, never as a
pickle (pytorch_model.bin), and a resume unpickles nothing but with `weights_only=True`."""

from __future__ import annotations

import torch

from tests.helpers.coarse import _trainer


def _constant_rm(prompts, rollout):
    return torch.ones(len(prompts))


def test_checkpoint_holds_safetensors_and_resume_loads_weights_only(micro, tmp_path, monkeypatch):
    over = {"steps": 3, "checkpoint_every": 2, "ppo_epochs": 1}
    tr, _, _ = _trainer(micro, tmp_path, _constant_rm, over)
    tr.train()
    ckpt = sorted(tmp_path.glob("ckpt-*"))[-1]
    names = {p.name for p in ckpt.iterdir()}
    assert "model.safetensors" in names and not any(n.startswith("pytorch_model") for n in names)
    calls = []
    real = torch.load

    def spy(*a, **k):
        calls.append(k.get("weights_only"))
        return real(*a, **k)

    monkeypatch.setattr(torch, "load", spy)
    again, _, _ = _trainer(micro, tmp_path, _constant_rm, over)
    state = again.train()
    assert state.resumed_from == 2 and state.step == 3
    assert calls and all(w is True for w in calls), calls  # optimizer, RNG: weights_only
