"""The CLI (`python -m c2f_exp`) run in this process: tests/e2e/test_bad_inputs.py's table and
test_secrets.py. (A real subprocess: tests/conftest.py's `run_cli`.)"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def run_inprocess(args: list[str], tmp: Path, capsys) -> tuple[int, str, str]:
    """`python -m c2f_exp <args>` in this process; (exit status, stdout, stderr)."""
    argv = ["c2f_exp", f"hydra.run.dir={tmp}/run", f"paths.cache_dir={tmp}/cache", "tracker=none"]
    old = sys.argv
    sys.argv = (
        argv
        + [a for a in args if not a.startswith("paths.cache_dir=")]
        + [a for a in args if a.startswith("paths.cache_dir=")]
    )
    try:
        runpy.run_module("c2f_exp", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err
