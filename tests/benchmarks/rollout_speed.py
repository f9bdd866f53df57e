"""Generated tokens/s of our rollout vs. plain `model.generate` on the same batch.

Our `rollout.generate` with the lean decoder (default) and with the model's own per-token
forward, and transformers' `model.generate` (sampling at temperature 1, top_k 0, EOS stop), on
ppo_vs_trl.py's random-init tiny Mistral policy and 8 tiny-world prompts, interleaved, medians
of `runs` repetitions after a warm-up. ppo_vs_trl.py runs it after the PPO comparison; alone:

    python tests/benchmarks/rollout_speed.py [--lengths 32 128 256] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ppo_vs_trl import BATCH, PREP, ROOT, build_models, prompts


def run_gen(d: Path, length: int, runs: int) -> dict[str, list[float]]:
    """Generated tokens/s: ours (lean, forward loop) vs. `model.generate`, same batch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sys.path.insert(0, str(ROOT))
    from c2f_exp.coarse.rollout import encode_prompts, generate

    tok = AutoTokenizer.from_pretrained(d / "policy")
    model = AutoModelForCausalLM.from_pretrained(d / "policy").eval()
    ids, mask = encode_prompts(tok, prompts(BATCH), "<s> ")
    eos, pad = tok.eos_token_id, tok.pad_token_id

    def ours(lean: bool):
        ro = generate(model, ids, mask, length, eos, pad, 1.0, 0, False, lean=lean, logprobs=lean)
        return ro.n_tokens

    def hf():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=length,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        resp = out[:, ids.shape[1] :]
        is_eos = resp == eos
        ends = torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1, resp.shape[1])
        return int(ends.sum())

    fns = {"lean": lambda: ours(True), "forward": lambda: ours(False), "generate": hf}
    res: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        torch.manual_seed(0)
        fn()
    for r in range(runs + 1):
        for name, fn in fns.items():
            torch.manual_seed(r)
            t0 = time.perf_counter()
            n = fn()
            res[name].append(n / (time.perf_counter() - t0))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[32, 128, 256])
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="rollout_speed_"))
    build_models(d, PREP / "base")
    print(f"{'length':>6s} {'lean':>7s} {'forward':>8s} {'generate':>9s} {'ratio':>6s}")
    for length in a.lengths:
        g = {k: statistics.median(v[1:]) for k, v in run_gen(d, length, a.runs).items()}
        r = g["lean"] / g["generate"]
        print(f"{length:6d} {g['lean']:7.0f} {g['forward']:8.0f} {g['generate']:9.0f} {r:6.2f}")


if __name__ == "__main__":
    main()
