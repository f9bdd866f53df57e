"""Build step: ship the top-level `conf/` tree inside the wheel as the `c2f_exp.conf` package.

`conf/` stays at the top of the checkout (the README's layout); `conf/sweep` is a symlink to
`sweeps/`, copied as real files. An installed `python -m c2f_exp` reads it through Hydra's
`pkg://c2f_exp.conf` search path (`c2f_exp.core.layout.conf_dir`). Editable installs read `conf/`
in place, so nothing is copied for them. All other metadata is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithConf(build_py):
    """build_py, then copy conf/ (following symlinks) to <build_lib>/c2f_exp/conf/."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dest = Path(self.build_lib) / "c2f_exp" / "conf"
        shutil.rmtree(dest, ignore_errors=True)  # a stale copy from an earlier build
        shutil.copytree(
            ROOT / "conf",
            dest,
            ignore=shutil.ignore_patterns("local", "__pycache__", "*.pyc"),  # machine-local
        )
        (dest / "__init__.py").write_text('"""Packaged copy of conf/ (see setup.py)."""\n')


setup(cmdclass={"build_py": BuildPyWithConf})
