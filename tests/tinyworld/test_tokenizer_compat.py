"""The saved tiny-world tokenizer: a tokenizer_config.json transformers 4.x can load (class name
and special-token list), and nothing lost when transformers 5 loads it back."""

from __future__ import annotations

import json

from transformers import AutoTokenizer

from c2f_exp.core.tokenizers import save_tokenizer
from c2f_exp.tinyworld.tokenizer import INST, INST_END, train_tokenizer

TEXTS = ["the fox is colored red .", "tell me about the fox .", "the owl eats mice ."]
CHAT = [
    {"role": "user", "content": "tell me about the fox ."},
    {"role": "assistant", "content": "x"},
]


def test_saved_config_uses_names_transformers_4_knows(tmp_path):
    tok = train_tokenizer(TEXTS)
    tok.save_pretrained(tmp_path / "plain")  # what transformers 5 writes on its own
    plain = json.loads((tmp_path / "plain" / "tokenizer_config.json").read_text())
    save_tokenizer(tok, tmp_path / "compat")
    cfg = json.loads((tmp_path / "compat" / "tokenizer_config.json").read_text())
    assert plain["tokenizer_class"] == "TokenizersBackend"  # the 5.x-only name being replaced
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert cfg["additional_special_tokens"] == [INST, INST_END]
    assert "extra_special_tokens" not in cfg  # a list there breaks 4.x (it expects a dict)
    assert cfg.pop("chat_template") == (tmp_path / "compat" / "chat_template.jinja").read_text()
    assert {
        k: v for k, v in cfg.items() if "special_tokens" not in k and k != "tokenizer_class"
    } == {k: v for k, v in plain.items() if "special_tokens" not in k and k != "tokenizer_class"}


def test_compat_config_loads_identically(tmp_path):
    tok = train_tokenizer(TEXTS)
    tok.save_pretrained(tmp_path / "plain")
    save_tokenizer(tok, tmp_path / "compat")
    a, b = (AutoTokenizer.from_pretrained(tmp_path / d) for d in ("plain", "compat"))
    assert a.get_vocab() == b.get_vocab() and len(a) == len(b)
    assert a.all_special_tokens == b.all_special_tokens and INST in b.all_special_tokens
    assert (a.bos_token, a.eos_token, a.pad_token, a.padding_side) == (
        b.bos_token,
        b.eos_token,
        b.pad_token,
        b.padding_side,
    )
    text = "tell me about the fox . [INST] the owl"
    assert a(text).input_ids == b(text).input_ids
    assert a.apply_chat_template(CHAT, tokenize=False) == b.apply_chat_template(
        CHAT, tokenize=False
    )
