"""A real `mlflow server` for tests and scripts: a free port, a SQLite backend and an artifact
store under a temp dir, readiness by /health, and a stop that leaves no process behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """`mlflow server` on a free port, in its own process group (uvicorn workers and, where job
    execution is on, huey consumers are children: one killpg stops them all)."""

    def __init__(self, tmp: Path):
        self.url = f"http://127.0.0.1:{free_port()}"
        cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
               "--port", self.url.rsplit(":", 1)[1], "--workers", "1",
               "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
               "--artifacts-destination", str(tmp / "artifacts")]  # fmt: skip
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no huey consumer
        log = open(tmp / "server.log", "w")  # noqa: SIM115  (closed in stop())
        self._log, self.log_path = log, tmp / "server.log"
        self.proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # fmt: skip

    def wait(self, timeout: float = 90.0) -> str:
        """The URL once /health answers (start-up takes 5-20 s on a busy 2-core machine)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.log_path.read_text()[-2000:]
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return self.url
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"mlflow server not ready in {timeout}s")

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)  # the server's own group: it and its children
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                time.sleep(0.2)  # let its workers go too
                os.killpg(self.proc.pid, 0)  # any left? then the next signal
            except (subprocess.TimeoutExpired, ProcessLookupError):
                continue
        self._log.close()
