"""Hydra's composition errors (misspelt keys and groups, wrong types, bad override syntax) as
one line naming the key and the fix, with exit status 2 — like our own ConfigErrors.

Hydra prints these as several lines (and for a misspelt key suggests `+key=value`, which would
add the typo to the config). `install()` wraps Hydra's reporter so an exception raised *before
the job starts* (composition) is printed as `error: <one line>`; errors raised inside the job
keep their own handling. `HYDRA_FULL_ERROR=1` still shows Hydra's full trace.

The same wrapper gives SIGTERM (SLURM's time limit) and SIGINT (Ctrl-C) the exception path
(c2f_exp/core/signals.py): manifest `failed`, locks released, temp dirs removed, then one
`error: interrupted by SIGTERM; ...` line and exit 143 (130 for Ctrl-C).
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from typing import Any

from c2f_exp.core import signals
from c2f_exp.core.secrets import redact_text

_state = {"job_started": False}
_ENUM_ERROR = re.compile(r"Invalid value '(.*)', expected one of \[(.*)\]")


def job_started() -> None:
    """Called first thing in the job: later exceptions are not composition errors."""
    _state["job_started"] = True


def _schema_keys(parent: str) -> list[str]:
    from omegaconf import DictConfig, OmegaConf

    from c2f_exp.config import C2FConfig

    node = OmegaConf.structured(C2FConfig)
    sub = OmegaConf.select(node, parent) if parent else node
    return list(sub.keys()) if isinstance(sub, DictConfig) else []


def _unknown_key(full_key: str, override: str) -> str:
    parent, _, name = full_key.rpartition(".")
    close = difflib.get_close_matches(name, _schema_keys(parent), n=1)
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}?" if close else "remove it"
    return f"{full_key} is not a key of the config schema (override {override!r}); {hint}"


def one_line(ex: BaseException) -> str | None:
    """A one-line message for a Hydra/OmegaConf composition error, or None for other errors."""
    import yaml
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(ex, yaml.YAMLError):  # a config file that is not YAML (conf/local/default.yaml)
        return _yaml_error(ex)
    if not isinstance(ex, (HydraException, OmegaConfBaseException)):
        return None
    text, cause = str(ex), ex.__cause__
    ctext = str(cause) if cause is not None else ""
    full_key = re.search(r"full_key: (\S+)", ctext or text)
    override = re.search(r"use \+(\S+)$", text, re.M) or re.search(
        r"override '?([^'\n]+?)'?\.?$", text, re.M
    )
    ov = getattr(ex, "override", None) or (override.group(1) if override else "")
    if isinstance(ex, OverrideParseException):
        first = text.strip().splitlines()[0]
        return f"cannot parse override {ov!r} ({first}); see `python -m c2f_exp --help`"
    if isinstance(ex, MissingConfigException) or "Could not find '" in text:
        m = re.search(r"Could not find '([^']+)/([^']+)'", text)
        opts = re.findall(r"^\t(\S+)$", text, re.M)
        if m:
            group, opt = m.groups()
            listed = ", ".join(opts) if opts else "see conf/" + group
            return (
                f"{group}={opt} is not an option of config group {group} "
                f"({group}/{opt} not found; options: {listed})"
            )
    if full_key and re.search(r"Key '[^']+' (is )?not in", ctext):
        return _unknown_key(full_key.group(1), ov.lstrip("+"))
    choice = _ENUM_ERROR.search(ctext or text)
    if full_key and choice:  # a Choice-typed field (c2f_exp/core/choices.py): our own wording
        value, options = choice.groups()
        return f"{full_key.group(1)} must be one of {options} (got {value!r})"
    if full_key and cause is not None:
        first = ctext.strip().splitlines()[0]
        return f"{full_key.group(1)}: {first} (override {ov!r}); fix the value on the command line"
    return " ".join(x.strip() for x in text.strip().splitlines() if x.strip()) or type(ex).__name__


def _yaml_error(ex: Any) -> str:
    """`<file> line <l> column <c>: <problem> (<context>); fix its YAML syntax`."""
    mark = getattr(ex, "problem_mark", None)
    where = f"{mark.name} line {mark.line + 1} column {mark.column + 1}" if mark else "a config"
    what = " ".join(str(x) for x in (getattr(ex, "problem", None) or ex,) if x)
    ctx = getattr(ex, "context", None)
    return f"{where}: {what}{f' ({ctx})' if ctx else ''}; fix its YAML syntax"


def install() -> None:
    """Wrap `hydra._internal.utils.run_and_report` (what `@hydra.main` reports errors with)."""
    import hydra._internal.utils as hu

    from c2f_exp.core.secrets import install_log_redaction

    install_log_redaction()  # Hydra logs each multirun job's overrides (URL credentials too)
    _state["job_started"] = False  # a new command line (tests call main() more than once)
    original = hu.run_and_report
    if getattr(original, "_c2f", False):
        return

    def run_and_report(func: Any) -> Any:
        def guarded() -> Any:
            try:
                with signals.handled():  # SIGTERM/SIGINT raise Interrupted: the error path
                    return func()
            except (signals.Interrupted, KeyboardInterrupt) as ex:
                raise SystemExit(signals.report(ex)) from None  # one line, exit 143 / 130
            except Exception as ex:
                msg = None if _state["job_started"] else one_line(ex)
                if msg is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                print(f"error: {redact_text(msg)}", file=sys.stderr)
                raise SystemExit(2) from None

        return original(guarded)

    run_and_report._c2f = True  # type: ignore[attr-defined]
    hu.run_and_report = run_and_report
