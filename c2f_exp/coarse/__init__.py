"""The `coarse` stage: PPO on the base model with Continuous Maximization -> the Coarse Actor
(docs/method.md §2.1, docs/coarse.md). `stage` orchestrates; the parts:

* `ppo` — pure tensor math: log-probs, masked statistics, KL estimators, GAE, clipped losses,
  KL controllers. No models, no I/O.
* `length_schedules` — the rollout length limit l(t): fixed, linear, step and Continuous
  Maximization, one interface and one registry (`SCHEDULES`).
* `rollout`, `engines`, `decode` — generation (hf or vLLM); `experience`, `critic`, `update`,
  `trainer` — the PPO loop; `traces`, `gold_monitor`, `gold_rewards` — what it logs.
* `config` / `schedule_config` — the typed schemas of the `coarse` and `length_schedule` groups.
"""
