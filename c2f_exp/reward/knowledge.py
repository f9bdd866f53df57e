"""Knowledge head: a reward model that also reads a language model's surprisal.

Why (measured, conf/reward/tinyworld.yaml): a ~1M-parameter Bradley-Terry classifier initialised
from the tiny base cannot tell a true fact from a false one (wrong-fact pairs at chance, even
when trained on such pairs), although the base *language model* prefers the true value 98% of
the time (prepare's `heldout_fact_preference`). The knowledge is in the LM head; the reward
head never learns to read it. So the reward is

    R(x, y) = w_0 * rm(x, y) + sum_k w_k * (f_k(x, y) - mean_k) / scale_k

with `rm` the Bradley-Terry score and `f` statistics of the knowledge LM's per-token
distribution over the whole sequence (`FEATURES`):

* `contradictions`: tokens the LM was confident about (entropy < `CONFIDENT` nats) and that
  fall `SURPRISE` nats or more below its top choice (a false value, a stray animal);
* `confident_surprise`: the summed shortfall at those confident positions;
* `log_likelihood`: the summed token log-probabilities;
* `tokens`: the sequence length;
* `sentences`: sentences (spans ending at a token that ends in ".", "!" or "?", or at EOS);
* `clean_sentences`: sentences that repeat no earlier sentence of the sequence token for token
  and hold no confident contradiction: a count of *distinct, unobjectionable statements*, which
  a last-token classifier of ~1M parameters cannot compute (it scores a repeated sentence like
  a new fact) and which the Bradley-Terry fit can only weigh, not invent.

The sentence features read token ids and the LM's contradiction flags only: no parser, nothing
specific to the tiny world. The sentence-end token ids are taken from the tokenizer when the
head is fitted and stored with it (`sentence_ends`). A head stores the names of the features it
was fitted on (`features`), so heads fitted before a feature existed load and score unchanged.

The weights `w` are learned: a logistic regression (Bradley-Terry on score differences) on the
reward model's own training pairs, after the classifier has been trained. The LM (the reward
model's init, a causal LM with the same tokenizer) is saved in the reward model's directory
under `knowledge_lm/`; the weights sit in its config.json (`c2f_reward_knowledge`), so
`reward_model.load_reward_model` and `score_ids` apply the head wherever the model is used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
KEY = "c2f_reward_knowledge"  # in the reward model's config.json
LM_DIR = "knowledge_lm"
TOKEN_FEATURES = ("contradictions", "confident_surprise", "log_likelihood", "tokens")
SENTENCE_FEATURES = ("sentences", "clean_sentences")
FEATURES = TOKEN_FEATURES + SENTENCE_FEATURES  # what `fit` uses for a new head
CONFIDENT = 1.0  # nats: a position whose next-token entropy is below this is "confident"
SURPRISE = 2.0  # nats below the top choice: a confident position's token contradicts the LM


def sentence_end_ids(tok: Any) -> list[int]:
    """Ids of the tokens that end a sentence: text ending in ".", "!" or "?", and EOS."""
    ends = {i for t, i in tok.get_vocab().items() if t.rstrip().endswith((".", "!", "?"))}
    if tok.eos_token_id is not None:
        ends.add(tok.eos_token_id)
    return sorted(ends)


def _sentence_counts(ids: list[int], flags: list[bool], ends: set[int]) -> tuple[int, int]:
    """(sentences, clean sentences) of one unpadded sequence; `flags[t]`: token t contradicts."""
    seen: set[tuple[int, ...]] = set()
    n = clean = start = 0
    for t in range(len(ids)):
        if ids[t] in ends or t == len(ids) - 1:
            sent = tuple(ids[start : t + 1])
            n += 1
            clean += sent not in seen and not any(flags[start : t + 1])
            seen.add(sent)
            start = t + 1
    return n, clean


@torch.no_grad()
def features(
    lm: torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    ends: list[int] | None = None,
) -> torch.Tensor:
    """(B, L) right-padded ids and mask -> (B, F) float32 knowledge features: `TOKEN_FEATURES`,
    then `SENTENCE_FEATURES` when the sentence-end token ids `ends` are given."""
    logits = lm(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
    logp = logits.log_softmax(-1)
    tgt = ids[:, 1:]
    lp = logp.gather(-1, tgt[..., None])[..., 0]
    short = logp.max(-1).values - lp  # >= 0: how far below the LM's top choice
    conf = (-(logp.exp() * logp).sum(-1) < CONFIDENT).float()
    m = mask[:, 1:].float()
    contra = (short >= SURPRISE).float() * conf * m  # flags tokens 1..L-1
    cols = [contra.sum(-1), (short * conf * m).sum(-1), (lp * m).sum(-1), m.sum(-1)]
    if ends is not None:
        end_set, rows = set(ends), []
        for b in range(ids.shape[0]):
            n = int(mask[b].sum())
            flags = [False, *(contra[b, : n - 1] > 0).tolist()]
            rows.append(_sentence_counts(ids[b, :n].tolist(), flags, end_set))
        cols += list(torch.tensor(rows, dtype=torch.float32, device=m.device).reshape(-1, 2).T)
    return torch.stack(cols, -1)


def pad_batch(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, L) ids and attention mask of token sequences."""
    width = max(map(len, rows))
    x = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(x)
    for j, row in enumerate(rows):
        x[j, : len(row)] = torch.tensor(row)
        mask[j, : len(row)] = 1
    return x, mask


def features_of(
    lm, rows: list[list[int]], pad_id: int, batch_size: int = 64, ends: list[int] | None = None
) -> torch.Tensor:
    """`features` of token sequences (ragged), in batches. Returns (N, F)."""
    dev = next(lm.parameters()).device
    width = len(TOKEN_FEATURES) + (len(SENTENCE_FEATURES) if ends is not None else 0)
    out = [
        features(lm, *(t.to(dev) for t in pad_batch(rows[i : i + batch_size], pad_id)), ends).cpu()
        for i in range(0, len(rows), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, width)


def head_of(model: Any) -> dict | None:
    """The knowledge head's parameters from `model`'s config, or None."""
    return getattr(model.config, KEY, None)


def attached_lm(model: Any) -> torch.nn.Module | None:
    return model.__dict__.get("_c2f_knowledge_lm")


def attach(model: Any, lm: torch.nn.Module) -> None:
    """Give `model` its knowledge LM (frozen), without making it a submodule: the reward
    model's parameters, state dict and optimiser stay the classifier's own."""
    lm.eval().requires_grad_(False)
    model.__dict__["_c2f_knowledge_lm"] = lm


def load_lm(ref: str | Path, dtype: torch.dtype | None = None) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(ref), dtype=dtype, use_safetensors=True)


def maybe_attach(model: Any, ref: str, dtype: torch.dtype | None = None) -> None:
    """After loading a reward model from directory `ref`: load its knowledge LM if it has one."""
    head = head_of(model)
    if head is not None and attached_lm(model) is None:
        path = Path(ref) / head["lm"]
        if not path.is_dir():
            from c2f_exp.core.errors import ConfigError

            raise ConfigError(
                f"reward model {ref} has a knowledge head but no {head['lm']}/ beside it; "
                "copy the whole reward model directory, or retrain it"
            )
        attach(model, load_lm(path, dtype))


def combine(model: Any, rm_scores: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
    """R = w_0 * rm + w . standardised features, for a batch (rm_scores (B,) on any device)."""
    head, lm = head_of(model), attached_lm(model)
    if head is None:
        return rm_scores
    if lm is None:
        raise RuntimeError("reward model has a knowledge head but no LM: use load_reward_model")
    dev = next(lm.parameters()).device
    names = head.get("features", TOKEN_FEATURES)  # a head fitted before sentence features
    ends = head.get("sentence_ends") if any(n in SENTENCE_FEATURES for n in names) else None
    f = features(lm, ids.to(dev), mask.to(dev), ends).cpu()  # the columns of `names`
    w = torch.tensor(head["weights"])
    z = (f - torch.tensor(head["mean"])) / torch.tensor(head["scale"])
    return w[0] * rm_scores.float().cpu() + z @ w[1:]


def fit(
    rm_diff: torch.Tensor,
    f_chosen: torch.Tensor,
    f_rejected: torch.Tensor,
    l2: float = 1e-3,
    sentence_ends: list[int] | None = None,
):
    """Bradley-Terry weights on (rm score, standardised features) differences of training pairs
    (chosen - rejected); the features' columns are `FEATURES` (with `sentence_ends`, the ids
    they were computed with) or `TOKEN_FEATURES` (without). Returns the head dict stored in the
    config (without `lm`)."""
    names = FEATURES if sentence_ends is not None else TOKEN_FEATURES
    if f_chosen.shape[1] != len(names):
        raise ValueError(f"{f_chosen.shape[1]} feature columns, expected {len(names)}: {names}")
    allf = torch.cat([f_chosen, f_rejected])
    mean, scale = allf.mean(0), allf.std(0).clamp_min(1e-6)
    x = torch.cat([rm_diff[:, None].float(), (f_chosen - f_rejected) / scale], 1)
    w = torch.zeros(x.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, line_search_fn="strong_wolfe")
    ones = torch.ones(len(x))

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w, ones)
        loss = loss + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    acc = ((x @ w.detach()) > 0).float().mean().item()
    log.info("knowledge head: weights %s, train pair accuracy %.3f", w.detach().tolist(), acc)
    extra = {"sentence_ends": list(sentence_ends)} if sentence_ends is not None else {}
    return extra | {
        "features": list(names),
        "weights": [round(v, 6) for v in w.detach().tolist()],
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "train_accuracy": acc,
    }


def save(model: Any, out: Path) -> None:
    """Write the attached knowledge LM beside a saved reward model (`out` = its directory)."""
    lm = attached_lm(model)
    if head_of(model) is not None and lm is not None:
        lm.save_pretrained(out / head_of(model)["lm"], safe_serialization=True)
