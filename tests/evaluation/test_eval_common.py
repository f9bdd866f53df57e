"""The tiny eval artifact (tests.helpers.eval.build_tiny_artifact, conftest's `tiny_artifact`)
loads as the eval stage loads models.

The builders (`build_tiny_artifact`, `eval_root`, `eval_cfg`, `make_ctx`) live in
tests/helpers/eval.py.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_tiny_artifact_models_load_with_bos(tiny_artifact):
    from c2f_exp.evaluation.lineup import ModelRef, load

    path = str(tiny_artifact / "base")
    model, tok = load(ModelRef("base", path, False, path), "float32", "cpu")
    ids = tok("tell me about the x .").input_ids
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert tok(chat, add_special_tokens=False).input_ids.count(tok.bos_token_id) == 1
    assert tok.padding_side == "left" and not model.training
