"""A word-level tokenizer trained locally on the tiny world's texts (HF `tokenizers`).

It is saved as a `PreTrainedTokenizerFast` with a Mistral-style chat template, so the tiny
models go through exactly the code paths the 7B models do (`apply_chat_template`, EOS, padding).
`save_tokenizer` writes a tokenizer_config.json that transformers 4.x loads too (tested 4.57).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
INST, INST_END = "[INST]", "[/INST]"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, INST, INST_END]

# Mistral-Instruct's layout with the tiny world's tokens: "<s> [INST] q [/INST] a </s> ..."
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ ' [INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'] + ' ' + eos_token }}"
    "{% elif message['role'] == 'system' %}{{ ' ' + message['content'] }}"
    "{% endif %}{% endfor %}"
)


def train_tokenizer(
    texts: Iterable[str], extra_words: Iterable[str] = ()
) -> PreTrainedTokenizerFast:
    """Train a word-level tokenizer whose vocabulary covers every word of `texts`.

    Args:
        texts: training texts (the world's corpus and instruction data).
        extra_words: words that must be in the vocabulary even if `texts` lack them.
    """
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # words and punctuation, split
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1)
    tok.train_from_iterator([*texts, " ".join(extra_words)], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[INST, INST_END],
        padding_side="left",
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
