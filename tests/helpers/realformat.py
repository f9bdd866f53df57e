"""Real-format stand-ins for the 7B recipe, built offline (issue 22).

* `mistral_dir(path, instruct=False)`: a model directory as the hub has it for
  Mistral-7B-v0.1 (or -Instruct-v0.2): the real `config.json` values and Mistral's real
  sentencepiece tokenizer (`tokenizer.model.v1` from the `mistral-common` package: 32000 tokens,
  BOS 1, EOS 2, **no pad token**) with a hub-like `tokenizer_config.json`; the instruct one
  carries Mistral-Instruct's `[INST]` chat template. No weights unless `weights=True`, which
  writes a small model of the same class and vocabulary (hidden sizes shrunk) as bf16
  safetensors.
* `hh_rows(n)` / `write_hh(layout, root, n)`: HH-RLHF-format rows in the layouts users have.
* `MT_BENCH`: the real 80 MT-Bench questions (tests/fixtures/mt_bench, see its NOTICE).
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MT_BENCH = FIXTURES / "mt_bench"

# Mistral-7B-v0.1's config.json (hub, 2023-09), the values that matter.
MISTRAL_7B_CONFIG = {
    "architectures": ["MistralForCausalLM"],
    "model_type": "mistral",
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "sliding_window": 4096,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 32000,
}

# Mistral-7B-Instruct-v0.2's chat template (tokenizer_config.json on the hub).
INSTRUCT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}"
)


def mistral_tokenizer_model() -> Path:
    import mistral_common

    return Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"


def mistral_dir(path: Path, instruct: bool = False, weights: bool = False) -> Path:
    """A Mistral-7B(-Instruct) directory in the hub's format (see the module docstring)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(MISTRAL_7B_CONFIG, indent=2))
    shutil.copy(mistral_tokenizer_model(), path / "tokenizer.model")
    tcfg = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": 1000000000000000019884624838656,
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "LlamaTokenizer",
        "use_default_system_prompt": False,
    }
    if instruct:
        tcfg["chat_template"] = INSTRUCT_TEMPLATE
    (path / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (path / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    if weights:
        _tiny_weights(path, seed=1 if instruct else 0)
    return path


def _tiny_weights(path: Path, seed: int) -> None:
    """A MistralForCausalLM with the real vocabulary but tiny widths, saved as bf16."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    small = {**MISTRAL_7B_CONFIG, "hidden_size": 64, "intermediate_size": 128}
    small.update(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    small.pop("architectures"), small.pop("model_type"), small.pop("torch_dtype")
    torch.manual_seed(seed)
    model = MistralForCausalLM(MistralConfig(**small)).to(torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)


def hh_rows(n: int, seed: int = 0) -> list[dict]:
    """`n` HH-RLHF-format preference rows (one or two turns), chosen more helpful."""
    import random

    rng = random.Random(seed)
    topics = ["tea", "bicycles", "the moon", "bread", "rivers", "chess", "owls", "glass"]
    rows = []
    for i in range(n):
        t = topics[i % len(topics)]
        q = f"Can you tell me something about {t}? (question {i})"
        good = f"Sure. {t.capitalize()} is a broad topic; here is one clear fact about it."
        bad = rng.choice(["I don't know.", "No.", "Ask someone else."])
        head = f"\n\nHuman: {q}"
        if i % 3 == 0:  # a two-turn transcript
            head += f"\n\nAssistant: {good}\n\nHuman: Tell me more."
        rows.append(
            {"chosen": f"{head}\n\nAssistant: {good}", "rejected": f"{head}\n\nAssistant: {bad}"}
        )
    return rows


def write_hh(kind: str, root: Path, n: int = 48) -> Path:
    """HH-RLHF data in one of the layouts a user may have; returns what to point the keys at.

    kind: `split_dir` (root/{train,test}.jsonl), `hub_clone` (a git clone of the hub repo:
    root/helpful-base/{train,test}.jsonl.gz) or `one_file` (root/hh.jsonl, no test split).
    """
    root.mkdir(parents=True, exist_ok=True)
    rows = hh_rows(n)
    cut = n * 3 // 4
    text = {
        s: "".join(json.dumps(r) + "\n" for r in part)
        for s, part in (("train", rows[:cut]), ("test", rows[cut:]))
    }
    if kind == "split_dir":
        for s, t in text.items():
            (root / f"{s}.jsonl").write_text(t)
        return root
    if kind == "hub_clone":
        sub = root / "helpful-base"
        sub.mkdir(exist_ok=True)
        for s, t in text.items():
            with gzip.open(sub / f"{s}.jsonl.gz", "wt") as fh:
                fh.write(t)
        return root
    if kind == "one_file":
        f = root / "hh.jsonl"
        f.write_text(text["train"] + text["test"])
        return f
    raise ValueError(kind)


REHEARSAL_TASK = """task: rehearsal_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{q}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
"""


def rehearsal_inputs(root: Path) -> tuple[list[str], Any]:
    """What a user has for the 7B recipe, as stand-ins under `root`, and the command-line
    overrides that point `+experiment=mistral_c2f debug=micro` at them (add `distributed=`).
    Returns (overrides, the running judge server: close it when done)."""
    from tests.helpers.judge_server import KEY_ENV, JudgeServer

    base = mistral_dir(root / "Mistral-7B-v0.1")
    instruct = mistral_dir(root / "Mistral-7B-Instruct-v0.2", instruct=True)
    clone = write_hh("hub_clone", root / "hh-rlhf")  # reward model: the hub repo's layout
    one_file = write_hh("one_file", root / "hh-prompts")  # PPO prompts: one file
    tasks = root / "tasks"
    tasks.mkdir(exist_ok=True)
    rows = [{"q": f"Is {n} even?", "choices": ["yes", "no"], "label": n % 2} for n in range(8)]
    (tasks / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tasks / "rehearsal_mc.yaml").write_text(REHEARSAL_TASK.format(data=tasks / "data.jsonl"))
    server = JudgeServer()
    return [
        "+experiment=mistral_c2f",
        "debug=micro",
        f"model.base.path={base}",
        f"model.instruct.path={instruct}",
        f"data.hub.preference_dataset={clone}",
        f"data.hub.prompt_dataset={one_file}",
        "eval.lm_eval.tasks=[rehearsal_mc]",
        f"eval.lm_eval.include_path=[{tasks}]",
        f"eval.mt_bench.question_file={MT_BENCH / 'question.jsonl'}",
        f"eval.mt_bench.judge_prompts_file={MT_BENCH / 'judge_prompts.jsonl'}",
        f"eval.mt_bench.reference_answer_file={MT_BENCH / 'reference_answer_gpt-4.jsonl'}",
        f"eval.mt_bench.judge.base_url={server.url}",
        "eval.mt_bench.judge.model=judge-model",
        f"eval.mt_bench.judge.api_key_env={KEY_ENV}",
        "tracker=none",
    ], server


def rehearsal_env() -> dict[str, str]:
    from tests.helpers.judge_server import KEY, KEY_ENV

    return {KEY_ENV: KEY, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
