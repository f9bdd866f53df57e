"""MT-Bench judges (single-answer grading on 1-10), chosen by `eval.mt_bench.judge.type`.

* `openai_compatible` / `hf_local` — `LLMJudge`: FastChat's judge prompts (`single-v1`,
  `single-math-v1` with a reference answer for math/reasoning/coding, and their `-multi-turn`
  variants for turn 2), read from the data source (mt_bench.py), never from code. The rating is
  the last `[[n]]` (else `[n]`) in the judgment, within 1-10; when none is found the judge is asked
  again (`retries`, sampling at `retry_temperature`), then the match scores -1 (FastChat's
  "failed"). FastChat takes the first match; the last is the final verdict when a judge quotes
  the format example ("Rating: [[5]]") or an earlier score in its explanation.
* `reward_model` — `RewardModelJudge`: a sequence-classification RM's score of the conversation,
  mapped linearly to 1-10 (see `calibrate`).
* `tinyworld_gold` — `GoldJudge` (gold_judge.py): the tiny world's gold scorer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from c2f_exp.core import layout
from c2f_exp.evaluation.clients import ChatClient, JudgeUnavailable
from c2f_exp.evaluation.verdicts import Judge, Judgment, Match  # re-exported for callers

if TYPE_CHECKING:
    from c2f_exp.evaluation.config import JudgeConf

log = logging.getLogger(__name__)
_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
API_ERROR = "$ERROR$"  # FastChat's marker for a judgment the API never returned


def extract_rating(text: str, lo: float = 1.0, hi: float = 10.0) -> float | None:
    """The last `[[n]]` in `text` (else the last `[n]`), or None when absent or outside lo..hi."""
    for pattern in (_RATING, _RATING_BACKUP):
        found = pattern.findall(text)
        if found:
            value = float(found[-1])
            return value if lo <= value <= hi else None
    return None


class LLMJudge:
    """A chat model grading with FastChat's single-answer prompts."""

    def __init__(self, name: str, client: ChatClient, prompts: dict[str, dict], jcfg: JudgeConf):
        self.name, self.client, self.prompts, self.cfg = name, client, prompts, jcfg
        self.ref_cats = set(jcfg.reference_categories)
        missing = {"single-v1", "single-v1-multi-turn"} - set(prompts)
        if missing:
            raise ValueError(f"judge prompts lack {sorted(missing)}")

    def prompt_for(self, m: Match) -> tuple[dict, dict[str, str]]:
        """The judge prompt for a match and the reference fields it fills."""
        suffix = "-multi-turn" if m.turn == 2 else ""
        ref = m.reference if m.question.get("category") in self.ref_cats else None
        if ref and f"single-math-v1{suffix}" in self.prompts:
            kw = {"ref_answer_1": ref[0]}
            if m.turn == 2:
                kw["ref_answer_2"] = ref[1] if len(ref) > 1 else ""
            return self.prompts[f"single-math-v1{suffix}"], kw
        return self.prompts[f"single-v1{suffix}"], {}

    def messages(self, m: Match) -> tuple[str, list[dict[str, str]], str]:
        """(prompt name, chat messages, user prompt) for a match."""
        tpl, kw = self.prompt_for(m)
        q, a = m.question["turns"], m.answers
        if m.turn == 2:
            user = tpl["prompt_template"].format(
                question_1=q[0], question_2=q[1], answer_1=a[0], answer_2=a[1], **kw
            )
        else:
            user = tpl["prompt_template"].format(question=q[0], answer=a[0], **kw)
        msgs = (
            [{"role": "system", "content": tpl["system_prompt"]}]
            if tpl.get("system_prompt")
            else []
        )
        return tpl["name"], [*msgs, {"role": "user", "content": user}], user

    def judge(self, m: Match) -> Judgment:
        name, msgs, user = self.messages(m)
        text = ""
        for attempt in range(self.cfg.retries + 1):
            temp = self.cfg.temperature if attempt == 0 else self.cfg.retry_temperature
            try:
                text = self.client.complete(msgs, temp, self.cfg.max_tokens)
            except JudgeUnavailable as e:
                log.warning("question %s turn %d: %s", m.question["question_id"], m.turn, e)
                return Judgment(-1.0, name, user, API_ERROR, attempt + 1)
            rating = extract_rating(text)
            if rating is not None:
                return Judgment(rating, name, user, text, attempt + 1)
            log.info(
                "question %s turn %d: no [[rating]] in judgment (attempt %d)",
                m.question["question_id"],
                m.turn,
                attempt + 1,
            )
        return Judgment(-1.0, name, user, text, self.cfg.retries + 1)

    def judge_many(self, matches: list[Match]) -> list[Judgment]:
        if self.cfg.parallel > 1:
            with ThreadPoolExecutor(self.cfg.parallel) as pool:
                return list(pool.map(self.judge, matches))
        return [self.judge(m) for m in matches]


def calibration_convs(rows: list[dict]) -> list[list[dict[str, str]]]:
    """Chosen and rejected conversations of preference rows: {"prompt": str | turns, "chosen",
    "rejected"} (the tiny world's files, hub pairs) or HH-RLHF transcripts without a prompt
    field ({"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...})."""
    from c2f_exp.reward.preferences import hh_to_turns

    out = []
    for p in rows:
        if "prompt" in p:
            q = p["prompt"]
            turns = q if isinstance(q, list) else [{"role": "user", "content": q}]
            out += [
                [*turns, {"role": "assistant", "content": p[k]}] for k in ("chosen", "rejected")
            ]
        else:
            out += [t for t in (hh_to_turns(p[k]) for k in ("chosen", "rejected")) if t]
    return out


def calibrate(raw: list[float], low: float, high: float) -> list[float]:
    """Map reward-model scores linearly so that `low` -> 1 and `high` -> 10, clipped to 1..10."""
    return [min(10.0, max(1.0, 1.0 + 9.0 * (r - low) / (high - low))) for r in raw]


def calibration_range(scores: list[float], q: float = 0.05) -> tuple[float, float]:
    """(q, 1-q) quantiles of RM scores of reference texts (chosen and rejected answers)."""
    s = sorted(scores)
    if len(s) < 2 or s[0] == s[-1]:
        raise ValueError("need at least two distinct calibration scores")
    lo, hi = s[int(q * (len(s) - 1))], s[round((1 - q) * (len(s) - 1))]
    return (lo, hi) if hi > lo else (s[0], s[-1])


class RewardModelJudge:
    """Reward-model scores of the conversation up to the graded turn, calibrated to 1-10.

    Calibration: `score_low`/`score_high` from config, else the 5%/95% quantiles of the RM's
    scores of the chosen and rejected answers in `calibration_file` (preference pairs with
    `prompt`, `chosen`, `rejected`), so that a typical rejected answer lands low and a typical
    chosen one high.
    """

    def __init__(
        self,
        path: str,
        jcfg: JudgeConf,
        device: str = "auto",
        calibration_pairs: list[dict] | None = None,
        batch_size: int = 16,
    ):
        from c2f_exp.evaluation.reward_scoring import RewardScorer

        self.name = Path(path).name or "reward_model"
        self.rm = RewardScorer(path, jcfg.dtype, device, batch_size)
        if jcfg.score_low is not None:
            self.low, self.high = float(jcfg.score_low), float(jcfg.score_high)
        elif calibration_pairs:
            self.low, self.high = calibration_range(
                self.rm.score(calibration_convs(calibration_pairs))
            )
        else:
            raise ValueError("reward_model judge needs score_low/score_high or calibration_file")
        log.info(
            "reward-model judge %s: scores %.3f..%.3f -> 1..10", self.name, self.low, self.high
        )

    def judge_many(self, matches: list[Match]) -> list[Judgment]:
        convs = []
        for m in matches:
            conv = []
            for q, a in list(zip(m.question["turns"], m.answers, strict=False))[: m.turn]:
                conv += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            convs.append(conv)
        raw = self.rm.score(convs)
        return [
            Judgment(s, "rm-calibrated", judgment=f"raw={r:.4f}")
            for s, r in zip(calibrate(raw, self.low, self.high), raw, strict=True)
        ]


JudgeFactory = Callable[..., Judge]


def registry() -> dict[str, JudgeFactory]:
    """judge.type -> factory(jcfg, **resources). Resources: prompts, world_path, device, ..."""
    from c2f_exp.evaluation.clients import HFChatClient, OpenAICompatibleClient
    from c2f_exp.evaluation.gold_judge import GoldJudge

    def openai_compatible(jcfg: JudgeConf, prompts: dict, **_: Any) -> Judge:
        client = OpenAICompatibleClient(
            jcfg.base_url,
            jcfg.model,
            jcfg.api_key_env,
            jcfg.timeout_s,
            jcfg.request_retries,
            jcfg.retry_backoff_s,
        )
        return LLMJudge(jcfg.model.replace("/", "--"), client, prompts, jcfg)

    def hf_local(jcfg: JudgeConf, prompts: dict, device: str = "auto", **_: Any) -> Judge:
        client = HFChatClient(jcfg.model, jcfg.dtype, device)
        return LLMJudge(Path(jcfg.model).name, client, prompts, jcfg)

    def reward_model(
        jcfg: JudgeConf,
        reward_path: str,
        device: str = "auto",
        calibration_pairs: list[dict] | None = None,
        **_: Any,
    ) -> Judge:
        return RewardModelJudge(reward_path, jcfg, device, calibration_pairs)

    def tinyworld_gold(jcfg: JudgeConf, world_path: str, **_: Any) -> Judge:
        return GoldJudge(world_path)

    return {
        "openai_compatible": openai_compatible,
        "hf_local": hf_local,
        "reward_model": reward_model,
        "tinyworld_gold": tinyworld_gold,
    }


LLM_JUDGES = ("openai_compatible", "hf_local")


def _reward_path(jcfg: JudgeConf, upstream: dict[str, dict]) -> str:
    """`judge.model`, else the reward stage's model (its resolver: `model/` or a hub ref)."""
    if jcfg.model:
        return jcfg.model
    from c2f_exp.reward.model import reward_model_ref

    return reward_model_ref(Path(upstream["reward"]["path"]))


def preflight(jcfg: JudgeConf, stages: list[str]) -> None:
    """Cheap checks of the judge before any model loads (key present, server/model reachable)."""
    from c2f_exp.core import hub
    from c2f_exp.core.errors import ConfigError

    if jcfg.type == "openai_compatible":
        from c2f_exp.evaluation.clients import OpenAICompatibleClient

        OpenAICompatibleClient(
            jcfg.base_url, jcfg.model, jcfg.api_key_env, timeout_s=jcfg.timeout_s
        ).check()
    elif (
        jcfg.type in ("hf_local", "reward_model")
        and jcfg.base_url
        and jcfg.model
        and not Path(str(jcfg.model)).expanduser().is_dir()  # an API judge's leftovers
    ):
        raise ConfigError(
            f"eval.mt_bench.judge.model={jcfg.model} with judge.type={jcfg.type}: the "
            "model is an API judge's (base_url is set); point judge.model at a local "
            "model directory (reward_model: or null for the run's reward model)"
        )
    if jcfg.type == "hf_local":
        hub.resolve_model(jcfg.model, "eval.mt_bench.judge.model")
    elif jcfg.type == "reward_model":
        if jcfg.calibration_file and jcfg.score_low is None:
            fix = 'rows {"chosen": ..., "rejected": ...} (+ "prompt", or HH transcripts)'
            layout.check_jsonl(
                Path(jcfg.calibration_file),
                "eval.mt_bench.judge.calibration_file",
                {"chosen": str, "rejected": str},
                fix,
            )
        if jcfg.model:
            hub.resolve_model(jcfg.model, "eval.mt_bench.judge.model")
        elif "reward" not in stages:
            raise ConfigError(
                "eval.mt_bench.judge.model is null and the reward stage does not "
                "run; add reward to stages or set judge.model=/path/to/rm"
            )
    elif jcfg.type == "tinyworld_gold" and "prepare" not in stages:
        raise ConfigError(
            "eval.mt_bench.judge.type=tinyworld_gold needs the tiny world: add prepare to stages"
        )


def build(
    jcfg: JudgeConf,
    prompts: dict | None,
    prepare_dir: str | None,
    upstream: dict[str, dict],
    device: str = "auto",
    calibration_pairs: list[dict] | None = None,
) -> Judge:
    """The configured judge with the resources it needs (prompts, world, reward model)."""
    res: dict[str, Any] = {"prompts": prompts, "device": device}
    if prepare_dir:
        res["world_path"] = str(layout.world_file(prepare_dir))
    if jcfg.type == "reward_model":
        res["reward_path"] = _reward_path(jcfg, upstream)
        cal = jcfg.calibration_file or (
            str(layout.data_file(prepare_dir, "preferences_test.jsonl")) if prepare_dir else None
        )
        if jcfg.score_low is None and cal and Path(cal).is_file():
            res["calibration_pairs"] = layout.read_jsonl(cal)
        elif jcfg.score_low is None and calibration_pairs:  # hub runs: the RM's test pairs
            res["calibration_pairs"] = calibration_pairs
    return registry()[jcfg.type](jcfg, **res)
