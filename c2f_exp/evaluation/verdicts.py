"""What every MT-Bench judge takes and returns (judges.py, gold_judge.py, reward_scoring.py).

A leaf module: the judge registry (judges.py) imports the judges, and the judges import these
types from here, not from the registry, so there is no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass
class Match:
    """One thing to grade: turn 1 or 2 of one model's answer to one question."""

    question: dict  # FastChat question: question_id, category, turns
    answers: list[str]  # the model's answers to turns 1 and 2
    turn: int  # 1 or 2
    reference: list[str] | None = None  # reference answers per turn (math/reasoning/coding)


@dataclass
class Judgment:
    score: float  # 1-10, or -1 when no rating could be obtained
    prompt_name: str
    user_prompt: str = ""
    judgment: str = ""
    attempts: int = 1


class Judge(Protocol):
    name: str  # the judge's model name in FastChat's files (`<name>_single.jsonl`)

    def judge_many(self, matches: list[Match]) -> list[Judgment]: ...
