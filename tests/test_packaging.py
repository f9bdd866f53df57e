"""The wheel ships conf/ as the `c2f_exp.conf` package and an installed run composes from it.

Runs setup.py's build step (what `pip install .` and `python -m build` run) into a temp dir and
composes from that copy through Hydra's `pkg://c2f_exp.conf`, in a subprocess that imports
the built package. The full check (wheel, fresh venv, `debug=micro` outside the checkout) is
the first step of .ci/run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from c2f_exp.core import layout

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def build_lib(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build_lib")
    cmd = [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_checkout_reads_its_own_conf():
    assert layout.conf_dir() == layout.CHECKOUT_CONF == ROOT / "conf"
    assert layout.hydra_config_path() == "../conf"  # as before: relative to __main__.py


def test_build_copies_every_config_file(build_lib):
    packaged = build_lib / "c2f_exp" / "conf"
    want = {p for p in _files(ROOT / "conf") if p.parts[0] != "local"}  # local: git-ignored
    got = _files(packaged)
    assert got == want | {Path("__init__.py")}
    assert {p.name for p in (packaged / "sweep").iterdir()} == {
        p.name for p in (ROOT / "sweeps").glob("*.yaml")
    }  # conf/sweep -> ../sweeps is copied as files
    assert not (packaged / "sweep").is_symlink()


def _files(root: Path) -> set[Path]:
    """Files under root, following directory links (conf/sweep -> ../sweeps)."""
    return {
        (Path(d) / f).relative_to(root)
        for d, _, fs in os.walk(root, followlinks=True)
        for f in fs
        if "__pycache__" not in d
    }


def test_built_package_composes_from_pkg_conf(build_lib, tmp_path):
    script = (
        "import c2f_exp.core.layout as l\n"
        "assert l.conf_dir() == l.PACKAGED_CONF, l.conf_dir()\n"
        "assert l.hydra_config_path() == 'pkg://c2f_exp.conf'\n"
        "from hydra import compose, initialize_config_dir\n"
        "from c2f_exp.config import register\n"
        "register()\n"
        "with initialize_config_dir(str(l.conf_dir()), version_base='1.3'):\n"
        "    c = compose('config', ['sweep=seeds', 'debug=micro', '+experiment=mistral_c2f'])\n"
        "print(c.sweep.name, c.experiment_name, c.length_schedule.l_max)\n"
    )
    env = {"PYTHONPATH": str(build_lib), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["seeds", "mistral_c2f", "16"]
