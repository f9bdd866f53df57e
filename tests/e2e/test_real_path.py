"""`+experiment=mistral_c2f` on real formats (issue 22): each defect a new user hit, a test.

Stand-ins (tests/helpers/realformat.py): Mistral-7B-v0.1's real config.json and real tokenizer
(no pad token), the instruct partner's [INST] chat template, HH-RLHF JSONL in the layouts users
have. Nothing is downloaded.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers.cli import run_inprocess
from tests.helpers.realformat import mistral_dir, write_hh


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("real")
    return {
        "base": str(mistral_dir(root / "Mistral-7B-v0.1")),
        "instruct": str(mistral_dir(root / "Mistral-7B-Instruct-v0.2", instruct=True)),
        "hh": str(write_hh("split_dir", root / "hh")),
    }


def user_paths(real: dict) -> list[str]:
    """The README's local-path overrides for the 7B recipe."""
    return [
        "+experiment=mistral_c2f",
        f"model.base.path={real['base']}",
        f"model.instruct.path={real['instruct']}",
        f"data.hub.preference_dataset={real['hh']}",
        f"data.hub.prompt_dataset={real['hh']}",
    ]


def test_every_stage_key_resolves_on_the_7b_recipe(compose, real):
    """reward.dataset is `${data.hub.preference_dataset}`: the reward stage's cache key used to
    be built in a new config root, where that interpolation could not resolve."""
    from c2f_exp.pipeline import registry

    cfg = compose(user_paths(real))
    for name, stage in registry().items():
        sub = stage.config_subtree(cfg)
        json.dumps(sub, default=str)  # plain values all the way down
        if name == "reward":
            assert sub["reward"]["dataset"] == real["hh"]


def test_distributed_enters_the_keys_of_trained_stages(compose, real):
    """A zero3 Coarse Actor or reward model is not reused for a one-process run (and back)."""
    from c2f_exp.pipeline import registry

    one = compose([*user_paths(real), "distributed=none"])
    z3 = compose(user_paths(real))  # the recipe's default: zero3
    stages = registry()
    for name in ("reward", "coarse"):
        assert stages[name].config_subtree(one) != stages[name].config_subtree(z3), name
        assert "distributed" not in stages[name].config_subtree(one)  # tiny keys unchanged
    for name in ("merge", "eval"):
        assert stages[name].config_subtree(one) == stages[name].config_subtree(z3), name


def test_the_policy_tokenizer_gets_a_pad_token(real):
    """Mistral's tokenizer has no pad token; rollouts left-pad prompts with one."""
    from c2f_exp.coarse.rollout import encode_prompts
    from c2f_exp.core.tokenizers import load_tokenizer

    tok = load_tokenizer(real["base"], "left")
    assert tok.pad_token == "<unk>" and tok.pad_token_id == 0 and tok.eos_token_id == 2
    ids, mask = encode_prompts(tok, ["Hi", "\n\nHuman: a much longer prompt\n\nAssistant:"])
    assert ids.shape == mask.shape and int(mask[0, 0]) == 0 and int(ids[0, 0]) == 0


def test_saved_tokenizers_keep_their_class_and_padding_side(real, tmp_path):
    """The Coarse Actor's and reward model's tokenizers load as the base model's did."""
    from transformers import AutoTokenizer

    from c2f_exp.core.tokenizers import load_tokenizer, save_tokenizer

    tok = load_tokenizer(real["base"], "left")
    save_tokenizer(tok, tmp_path / "actor")
    cfg = json.loads((tmp_path / "actor" / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "LlamaTokenizer" and cfg["padding_side"] == "left"
    again = AutoTokenizer.from_pretrained(tmp_path / "actor")
    assert again.padding_side == "left"
    assert again("Hello world").input_ids == tok("Hello world").input_ids


def test_no_gpu_stops_at_preflight_in_one_line(real, tmp_path, capsys):
    """The recipe's default distributed=zero3 on a machine without a GPU: exit 2, one line
    naming `distributed` and both fixes (was a DeepSpeed mpi4py traceback mid-run)."""
    code, _, err = run_inprocess(user_paths(real), tmp_path, capsys)
    assert code == 2
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "distributed=zero3" in line[0] and "distributed=none" in line[0]
    assert "GPU node" in line[0] and not (tmp_path / "cache").exists()


def test_ranks_to_start():
    from omegaconf import OmegaConf

    from c2f_exp.launch import ranks_to_start

    d = {"name": "zero3", "backend": "deepspeed", "num_processes": 8, "cpu": False}
    cfg = OmegaConf.create({"distributed": d})
    assert ranks_to_start(cfg, gpus=4) == 4  # one per visible GPU
    cfg.distributed.cpu, cfg.distributed.num_processes = True, 2
    assert ranks_to_start(cfg, gpus=0) == 2
    none = OmegaConf.create({"distributed": {**d, "backend": "none"}})
    assert ranks_to_start(none, gpus=4) == 0


def test_under_a_launcher_ranks_are_not_started_again(monkeypatch):
    from omegaconf import OmegaConf

    from c2f_exp.launch import ranks_to_start

    monkeypatch.setenv("LOCAL_RANK", "0")
    d = {"name": "zero3", "backend": "deepspeed", "num_processes": 8, "cpu": False}
    assert ranks_to_start(OmegaConf.create({"distributed": d}), gpus=0) == 0
