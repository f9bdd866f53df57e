"""SIGTERM (SLURM's time limit, `scancel`) and SIGINT (Ctrl-C) take the exception path.

`handled()` (entered by the CLI's error wrapper, cli_errors.install) installs one handler
for both signals that raises `Interrupted` in the main thread, so a stopped run unwinds like a
failed one: manifest.json says `failed` (pipeline.run_pipeline), artifact locks are released
and temp dirs removed (artifacts.claim / atomic_dir), a checkpointing stage keeps its work dir
to resume from, the tracker is finished. The CLI then prints one line (`error: interrupted by
SIGTERM; ...`) and exits 128 + the signal number (143, 130), as a shell reports a signal. A
second signal while unwinding is not caught: it stops the process at once.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """The run was stopped by a signal. A BaseException, so that `except Exception` blocks
    (retries, fallbacks) do not swallow it; cleanup in `finally` and `except BaseException`
    runs as for any error."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def _handler(signum: int, frame: Any) -> None:
    for s in SIGNALS:  # a second signal while unwinding: the default action (stop now)
        signal.signal(s, signal.SIG_DFL)
    raise Interrupted(signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Route SIGTERM and SIGINT to `Interrupted` inside the block (main thread only, as Python
    requires); the previous handlers come back after it (tests run the CLI in-process)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def report(e: BaseException) -> int:
    """Print the one `error:` line for an `Interrupted` (or a KeyboardInterrupt raised
    elsewhere); returns the exit status, 128 + the signal number."""
    signum = getattr(e, "signum", signal.SIGINT)
    print(
        f"error: interrupted by {signal.Signals(signum).name}; the run is marked failed in its "
        "manifest.json; rerun the same command to resume from the cached stages and checkpoints",
        file=sys.stderr,
    )
    return 128 + signum
