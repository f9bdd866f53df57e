"""Starting ranks for the user: `python -m c2f_exp … distributed=zero3` works as is.

With `distributed` other than `none` and no launcher around the process (no `RANK` /
`LOCAL_RANK` / `WORLD_SIZE` from torchrun, `accelerate launch` or SLURM's srun), the CLI starts
one rank per visible GPU itself through torch's elastic launch API (what `torchrun` runs), the
way Lightning's launcher does, with every rank in the job's Hydra run directory and the job's
own overrides; it waits for them and exits with their status. Under a launcher it does not
relaunch. Without a GPU it stops at preflight with one line naming `distributed` and both fixes,
unless `distributed.cpu=true` asks for `distributed.num_processes` CPU ranks (gloo; tests and
rehearsals of the multi-rank code path).
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from c2f_exp.core.errors import ConfigError

log = logging.getLogger(__name__)
LAUNCHER_VARS = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "ACCELERATE_USE_DEEPSPEED")
RANKED_STAGES = ("reward", "coarse")  # the stages `distributed` trains; the rest run in one


def under_launcher() -> bool:
    """True inside a rank started by torchrun / accelerate launch / srun (or by us)."""
    return any(v in os.environ for v in LAUNCHER_VARS)


def ranks_to_start(cfg: Any, gpus: int | None = None) -> int:
    """How many ranks this process must start (0: run the pipeline here, in this process).

    Raises ConfigError (one line, at preflight) for a multi-rank setting on a machine with no
    GPU unless `distributed.cpu` is set.
    """
    d = cfg.get("distributed")
    if d is None or str(d.backend) == "none" or under_launcher():
        return 0
    if not set(RANKED_STAGES) & set(cfg.get("stages") or ()):  # e.g. stages=[merge,eval]
        return 0
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    if gpus:
        return gpus
    if d.get("cpu"):
        return int(d.num_processes)
    raise ConfigError(
        f"distributed={d.name} needs GPUs and none is visible: add distributed=none to run in "
        "one process here (e.g. the debug=micro rehearsal), or run the same command on a GPU "
        "node, where it starts one rank per visible GPU (accelerate launch works too)"
    )


def launch(n: int, overrides: list[str], run_dir: Path) -> int:
    """Run `python -m c2f_exp <overrides> hydra.run.dir=<run_dir>` as `n` local ranks with
    torch's elastic launch; returns 0 when every rank succeeded, else 1 (the failing rank's
    error is in its log, `<run_dir>/ranks/`)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from c2f_exp.core.signals import Interrupted

    logs = run_dir / "ranks"
    logs.mkdir(parents=True, exist_ok=True)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=n,
        run_id=uuid.uuid4().hex[:8],
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        monitor_interval=1,
        logs_specs=_log_specs(logs),
    )
    args = ["-m", "c2f_exp", *overrides, f"hydra.run.dir={run_dir}"]
    log.info("starting %d ranks (torch elastic launch); their logs: %s", n, logs)
    try:
        elastic_launch(config, sys.executable)(*args)
    except ChildFailedError as e:
        log.error("a rank failed: %s (logs: %s)", next(iter(e.failures.values())).message, logs)
        return 1
    except SignalException as e:  # SIGTERM/SIGINT: the agent stopped the ranks (each marks
        raise Interrupted(int(e.sigval)) from None  # its manifest failed); one line, 143/130
    return 0


def _log_specs(logs: Path) -> Any:
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std

    return DefaultLogsSpecs(log_dir=str(logs), tee=Std.ALL)
