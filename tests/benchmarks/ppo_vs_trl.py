"""Speed of one PPO update (rollout + 4 epochs): ours vs. TRL 1.12.0's experimental PPOTrainer.

Same tiny models for both (random-init Mistral policy, hidden 128, 2 layers, the tiny world's
tokenizer; value and reward models of the same shape), batch 8, 4 PPO epochs, 1 minibatch,
sampling at temperature 1 with EOS as stop token, response lengths 32, 128 and 256. TRL runs in
its own venv (/tmp/trl112_venv: trl==1.12.0, torch==2.13.0, created here if missing). Each of
`--runs` rounds runs ours and TRL once per length, alternating which goes first, so both see the
same machine load; each run reports the median seconds per update after a warm-up and tokens/s
(tokens generated up to EOS / seconds). Printed: per-run ratios ours/TRL and their median.

Then generation alone: generated tokens/s of our rollout (`rollout.generate`: the lean decoder,
and the model's own per-token forward) vs. plain `model.generate` on the same batch (8 prompts,
temperature 1, top_k 0, EOS stop), interleaved, medians of `--runs` repetitions.
The CPU may be shared: timings noisy, compare ratios within one run.

    python tests/benchmarks/ppo_vs_trl.py [--updates 6] [--lengths 32 128 256] [--runs 3]
        [--threads N]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = Path("/tmp/trl112_venv")


def _latest_prepare() -> Path:
    """Newest complete prepare artifact (run `python -m c2f_exp` first, or pass --prep)."""
    done = sorted(
        (ROOT / "outputs" / "cache" / "prepare").glob("*/DONE"), key=lambda p: p.stat().st_mtime
    )
    return done[-1].parent if done else ROOT / "outputs" / "cache" / "prepare" / "MISSING"


PREP = _latest_prepare()
BATCH, EPOCHS = 8, 4


def ensure_venv() -> Path:
    py = VENV / "bin" / "python"
    ok = (
        py.is_file()
        and subprocess.run(
            [str(py), "-c", "import trl; assert trl.__version__ == '1.12.0'"], capture_output=True
        ).returncode
        == 0
    )
    if not ok:
        subprocess.run(["python3", "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "-q", "torch==2.13.0", "trl==1.12.0"],
            check=True,
        )
    return py


def build_models(d: Path, tok_dir: Path) -> None:
    """Random-init policy, value and reward models sharing one config, saved under `d`."""
    import torch
    from transformers import (
        AutoTokenizer,
        MistralConfig,
        MistralForCausalLM,
        MistralForSequenceClassification,
    )

    tok = AutoTokenizer.from_pretrained(tok_dir)
    kw = dict(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=512,
        sliding_window=None,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        num_labels=1,
    )
    for name, cls, seed in (
        ("policy", MistralForCausalLM, 0),
        ("value", MistralForSequenceClassification, 1),
        ("reward", MistralForSequenceClassification, 2),
    ):
        torch.manual_seed(seed)
        model = cls(MistralConfig(**kw))
        model.save_pretrained(d / name)
        tok.save_pretrained(d / name)


def prompts(n: int) -> list[str]:
    rows = [json.loads(x) for x in (PREP / "data" / "ppo_prompts.jsonl").read_text().splitlines()]
    return [r["prompt"] for r in rows][:n]


def trainer_for(d: Path, length: int, updates: int, prefix: str = "ours_"):
    """Our CoarseTrainer on the benchmark's models (fixed limit = length). Returns
    (trainer, cfg, work dir); profile_ppo.py builds the same trainer."""
    import torch
    from transformers import AutoTokenizer

    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    from c2f_exp.coarse import critic as cr
    from c2f_exp.coarse.experience import make_reward_fn
    from c2f_exp.coarse.length_schedules import build_schedule
    from c2f_exp.coarse.ppo import build_kl_controller
    from c2f_exp.coarse.trainer import CoarseTrainer, TrainerParts
    from c2f_exp.reward.model import load_reward_model
    from tests.helpers import check
    from tests.helpers.coarse import coarse_cfg

    over = {"steps": updates, "batch_size": BATCH, "minibatch_size": BATCH}
    over.update(ppo_epochs=EPOCHS, checkpoint_every=10**6, temperature=1.0, lr=3e-5)
    cfg = coarse_cfg(
        {"coarse": over, "length_schedule": {"l_max": length}}, schedule="fixed", micro=False
    )
    conf = check(cfg)  # the typed config the stage would get
    c = conf.coarse
    tok = AutoTokenizer.from_pretrained(d / "policy")
    acc = cr.build_accelerator(conf.distributed, c)
    torch.manual_seed(0)
    model = cr.ActorCritic(
        cr.load_policy(str(d / "policy"), torch.float32, False),
        cr.load_critic("reward", str(d / "value"), "", torch.float32),
    )
    rm, rm_tok = load_reward_model(str(d / "reward"))
    work = Path(tempfile.mkdtemp(prefix=prefix))
    parts = TrainerParts(
        accelerator=acc,
        model=model,
        ref_model=cr.load_frozen(str(d / "policy"), "causal", torch.float32),
        reward_fn=make_reward_fn(rm, rm_tok, tok, 64),
        schedule=build_schedule(conf.length_schedule),
        kl_ctl=build_kl_controller("fixed", c.kl_coef, None, 1),
        tok=tok,
        prompts=prompts(64),
        prefix="<s> ",
        work_dir=work,
        log_fn=lambda m, s: None,
        seed=0,
    )
    tr = CoarseTrainer(c, parts)
    return tr, cfg, work


def run_ours(d: Path, length: int, updates: int) -> tuple[list[float], list[int]]:
    """Seconds per update of our CoarseTrainer (fixed limit = length)."""
    from omegaconf import OmegaConf

    tr, cfg, work = trainer_for(d, length, updates)
    state = tr.train()
    OmegaConf.save(cfg, work / "cfg.yaml")
    return [r["seconds"] for r in state.trace], [r["tokens"] for r in state.trace]


def run_trl(d: Path, length: int, updates: int) -> tuple[list[float], list[int]]:
    """Seconds per update of TRL 1.12's PPOTrainer (run inside the TRL venv)."""
    import torch
    import trl.experimental.ppo.ppo_trainer as pt
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    tok = AutoTokenizer.from_pretrained(d / "policy")
    generated: list[int] = []
    orig = pt.batch_generation

    def counting(model, queries, *a, **k):  # tokens up to and including the first EOS
        qr, logits = orig(model, queries, *a, **k)
        resp = qr[:, queries.shape[1] :]
        eos = resp == tok.eos_token_id
        ends = torch.where(eos.any(1), eos.float().argmax(1) + 1, resp.shape[1])
        generated.append(int(ends.sum()))
        return qr, logits

    pt.batch_generation = counting
    ids = [tok(f"{tok.bos_token} {p}", add_special_tokens=False).input_ids for p in prompts(64)]
    ds = Dataset.from_dict({"input_ids": ids})
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            stamps.append(time.time())

        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.time())

    torch.manual_seed(0)
    args = PPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl_"),
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=1,
        num_mini_batches=1,
        num_ppo_epochs=EPOCHS,
        total_episodes=BATCH * updates,
        response_length=length,
        stop_token="eos",
        temperature=1.0,
        learning_rate=3e-5,
        kl_coef=0.05,
        local_rollout_forward_batch_size=64,
        num_sample_generations=0,
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        logging_steps=10**6,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = PPOTrainer(
        args=args,
        processing_class=tok,
        model=AutoModelForCausalLM.from_pretrained(d / "policy"),
        ref_model=AutoModelForCausalLM.from_pretrained(d / "policy"),
        reward_model=AutoModelForSequenceClassification.from_pretrained(d / "reward"),
        value_model=AutoModelForSequenceClassification.from_pretrained(d / "value"),
        train_dataset=ds,
        callbacks=[Clock()],
    )
    trainer.train()
    return [b - a for a, b in itertools.pairwise(stamps)], generated


def _worker(exe: str, who: str, d: Path, length: int, a, env) -> dict:
    cmd = [exe, __file__, "--updates", str(a.updates), "--runs", str(a.runs)]
    p = subprocess.run(
        [*cmd, "--worker", who, str(d), str(length)], capture_output=True, text=True, env=env
    )
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode or not line:
        sys.exit(f"{who} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return json.loads(line[0].removeprefix("RESULT "))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--updates", type=int, default=6, help="updates per run (first = warm-up)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[32, 128, 256])
    ap.add_argument("--runs", type=int, default=3, help="rounds of ours + TRL per length")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (both sides)")
    ap.add_argument("--worker", nargs=3, metavar=("WHO", "DIR", "LENGTH"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        who, d, length = a.worker
        if who == "gen":  # generation alone (rollout_speed.py)
            from rollout_speed import run_gen

            print("RESULT " + json.dumps(run_gen(Path(d), int(length), a.runs)), flush=True)
            return
        fn = run_trl if who == "trl" else run_ours
        secs, toks = fn(Path(d), int(length), a.updates)
        print("RESULT " + json.dumps({"seconds": secs, "tokens": toks}), flush=True)
        return
    py = ensure_venv()
    d = Path(tempfile.mkdtemp(prefix="ppo_vs_trl_"))
    build_models(d, PREP / "base")
    env = {**os.environ, "TQDM_DISABLE": "1", "WANDB_MODE": "disabled"}
    if a.threads:
        env.update(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    res: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    for run in range(a.runs):
        for length in a.lengths:
            order = (("ours", sys.executable), ("trl", str(py)))
            for who, exe in order if run % 2 == 0 else order[::-1]:
                r = _worker(exe, who, d, length, a, env)
                secs, toks = r["seconds"][1:], r["tokens"][1:]  # drop the warm-up update
                res.setdefault((length, who), []).append(
                    (
                        statistics.median(secs),
                        statistics.median(t / s for t, s in zip(toks, secs, strict=True)),
                        statistics.mean(toks),
                    )
                )
    print(
        f"batch {BATCH}, {EPOCHS} PPO epochs, 1 minibatch, {a.updates - 1} timed updates per run, "
        f"{a.runs} runs (ours and TRL alternating); threads {a.threads or 'default'}; "
        "tokens = generated up to and including EOS"
    )
    print(
        f"{'length':>6s} {'run':>3s} {'ours s':>7s} {'TRL s':>7s} {'ours tok':>9s} "
        f"{'TRL tok':>8s} {'ours tok/s':>10s} {'TRL tok/s':>9s} {'ratio':>6s}"
    )
    for length in a.lengths:
        ratios = []
        for i, ((so, to, go), (st, tt, gt)) in enumerate(
            zip(res[(length, "ours")], res[(length, "trl")], strict=True)
        ):
            ratios.append(to / tt)
            print(
                f"{length:6d} {i:3d} {so:7.2f} {st:7.2f} {go:9.0f} {gt:8.0f} {to:10.0f} "
                f"{tt:9.0f} {to / tt:6.2f}"
            )
        rs = " ".join(f"{x:.2f}" for x in ratios)
        print(f"{length:6d} median ours/TRL tokens/s {statistics.median(ratios):.2f} ({rs})")
    print("\ngeneration alone, tokens/s (medians; ratio = ours lean / model.generate)")
    print(f"{'length':>6s} {'lean':>7s} {'forward':>8s} {'generate':>9s} {'ratio':>6s}")
    for length in a.lengths:
        g = {
            k: statistics.median(v[1:])
            for k, v in _worker(sys.executable, "gen", d, length, a, env).items()
        }
        ratio = g["lean"] / g["generate"]
        print(
            f"{length:6d} {g['lean']:7.0f} {g['forward']:8.0f} {g['generate']:9.0f} {ratio:6.2f}"
        )


if __name__ == "__main__":
    main()
