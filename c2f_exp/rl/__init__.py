"""Reinforcement-learning parts of the Coarse Actor (DESIGN §2.1, §4).

* `ppo` — pure tensor math: log-probs, masked statistics, KL estimators, GAE, clipped losses,
  KL controllers. No models, no I/O.
* `length_schedules` — the rollout length limit l(t): fixed, linear, step and Continuous
  Maximization, one interface and one registry (`SCHEDULES`).
* `config` / `reward_config` — typed config schemas and their validation.
* `reward_model` — loading, scoring and checking Bradley–Terry reward models.
"""
