"""`python -m c2f_exp.compare <dir>...`: one table and plots over the jobs of sweeps or runs.

Each argument is a multirun directory (its numbered job dirs are found), a single run
directory, or a folder holding several of either. For every job it reads `manifest.json`
(written even when a job fails) and Hydra's `.hydra/overrides.yaml`, and writes:

* `compare.csv`: one row per job: the swept values (numbers as numbers; a per-layer λ list
  also as numeric `lambda_first`/`lambda_last` columns beside it), every headline number
  (analysis/summary.py: gold facts, gold total, repetition, explanations, reward, MT-Bench
  average, lm-eval accuracy, generated tokens, seconds and reused/done per stage) and the job's
  status and error;
* `compare.md`: the same as a Markdown table of the main columns, plus mean ± s.e. over seeds
  when `seed` is swept;
* `compare_<param>.png`: metrics against each swept parameter, error bars over seeds; and
  `compare_tokens.png`: facts against generated tokens, one colour per configuration.

Swept parameters are the overrides whose values differ between the jobs. Needs no network and
no wandb.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any

from c2f_exp.analysis.summary import SEED_KEYS, TABLE, ends, groups, headline, mean_se, number
from c2f_exp.core.overrides import parse as _parse
from c2f_exp.core.overrides import short_name

log = logging.getLogger(__name__)


def find_jobs(paths: list[Path]) -> list[Path]:
    """Job directories (holding `manifest.json` or Hydra's `.hydra/`) under `paths`."""
    jobs: list[Path] = []
    for p in paths:
        if not p.is_dir():
            raise FileNotFoundError(f"compare: {p} is not a directory")
        if (p / "manifest.json").is_file() or (p / ".hydra").is_dir():
            jobs.append(p)
            continue
        found = {m.parent for pat in ("manifest.json", ".hydra") for m in p.rglob(pat)}
        jobs += sorted(found, key=_job_order)
    return list(dict.fromkeys(jobs))


def _job_order(p: Path) -> tuple:
    return tuple(int(x) if x.isdigit() else x for x in p.parts)


def _overrides(job: Path) -> dict[str, str]:
    f = job / ".hydra" / "overrides.yaml"
    if not f.is_file():
        return {}
    from omegaconf import OmegaConf

    return {
        o.key_or_group: o.get_value_element_as_str()
        for o in _parse([str(x) for x in OmegaConf.load(f)])
    }


def _last_error(job: Path) -> str:
    """The last `error:`/ERROR line of the job's Hydra log (jobs killed before writing one)."""
    lines = [ln for f in job.glob("*.log") for ln in f.read_text(errors="replace").splitlines()]
    errs = [ln for ln in lines if "error:" in ln or "][ERROR]" in ln]
    return errs[-1].split(" - ", 1)[-1].strip() if errs else "no manifest.json (killed?)"


def load_job(job: Path) -> dict[str, Any]:
    """One row: job name, overrides, status, error, headline numbers."""
    row: dict[str, Any] = {"job": job.name, "path": str(job), "overrides": _overrides(job)}
    mf = job / "manifest.json"
    if not mf.is_file():
        return {**row, "status": "failed", "error": _last_error(job)}
    manifest = json.loads(mf.read_text())
    status = manifest.get("status", "done")  # manifests of older runs have no status
    if status == "running":
        status = "failed"  # a finished sweep's job that never finished: killed
        manifest.setdefault("error", "did not finish (killed, or still running)")
    row["status"] = status
    if manifest.get("error"):
        row["error"] = manifest["error"]
    return {**row, **headline(manifest)}


def swept_params(rows: list[dict[str, Any]]) -> list[str]:
    """Override keys whose values differ between jobs, in first-seen order."""
    keys = list(dict.fromkeys(k for r in rows for k in r["overrides"]))
    return [k for k in keys if len({r["overrides"].get(k) for r in rows}) > 1]


def typed(v: Any) -> Any:
    """An override's text as what it denotes, read by Hydra's own grammar: '2' -> 2,
    '1e-3' -> 0.001, '[0.5,1.5]' -> [0.5, 1.5]; other text (options, 'none', bools) as given."""
    if not isinstance(v, str):
        return v
    try:
        out = _parse([f"x={v}"])[0].value()
    except Exception:  # not a value Hydra's grammar reads
        return v
    ok = isinstance(out, (int, float, list)) and not isinstance(out, bool)
    return out if ok else v


def table(rows: list[dict[str, Any]], params: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Flat rows for the CSV: swept values (short names, typed), status, every headline key.

    A parameter that takes a list in any job (per-layer λ) keeps its text and gains numeric
    `<name>_first`/`<name>_last` columns, so spreadsheets and plots get numbers."""
    listy = [k for k in params if any(isinstance(typed(r["overrides"].get(k)), list)
                                      for r in rows)]  # fmt: skip
    flat = []
    for r in rows:
        d: dict[str, Any] = {"job": r["job"]}
        for k in params:
            v = typed(r["overrides"].get(k))
            d[short_name(k)] = r["overrides"].get(k) if isinstance(v, list) else v
            if k in listy:
                d.update(ends(short_name(k), v))
        d.update({k: v for k, v in r.items() if k not in ("overrides", "job")})
        flat.append(d)
    names = [[short_name(k), *ends(short_name(k), 0)] if k in listy else [short_name(k)]
             for k in params]  # fmt: skip
    first = ["job", *(n for ns in names for n in ns), "status"]
    rest = sorted({k for d in flat for k in d} - set(first) - {"error", "path"})
    return [*first, *rest, "error", "path"], flat


def _fixed(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.2f}"


def _fmt(v: Any, param: bool = False) -> str:
    """A cell: metrics rounded; a parameter's value as written (0.5, not 0.50)."""
    if isinstance(v, float) and not param:
        return str(int(v)) if v.is_integer() else _fixed(v)
    return "" if v is None else str(v).replace("|", "\\|")


def markdown(columns: list[str], flat: list[dict[str, Any]], params: list[str]) -> str:
    """compare.md: per-job table, then mean ± s.e. over seeds when seeds are swept."""
    cols = [c for c in columns[: columns.index("status") + 1] if c != "job"]
    cols += [c for c in TABLE if any(d.get(c) is not None for d in flat)]
    lines = ["| job | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for d in flat:
        cells = [_fmt(d.get(c), i < cols.index("status")) for i, c in enumerate(cols)]
        if d["status"] != "done":
            cells[cols.index("status")] = f"**{d['status']}**: {_fmt(d.get('error', ''))}"
        lines.append(f"| {d['job']} | " + " | ".join(cells) + " |")
    seeds = [p for p in params if p in SEED_KEYS]
    if seeds:
        keys = [p for p in params if p not in SEED_KEYS]
        metrics = [c for c in TABLE[1:] if any(number(d.get(c)) is not None for d in flat)]
        lines += ["", f"Mean ± standard error over {seeds[0]}s:", ""]
        lines += ["| " + " | ".join([*keys, "n", *metrics]) + " |"]
        lines += ["|---" * (len(keys) + 1 + len(metrics)) + "|"]
        for key, ds in groups(flat, params).items():
            cells = []
            for m in metrics:
                vals = [d[m] for d in ds if number(d.get(m)) is not None]
                cells.append(" ± ".join(map(_fixed, mean_se(vals))) if vals else "")
            vals = [_fmt(v, param=True) for v in key]
            lines.append("| " + " | ".join([*vals, str(len(ds)), *cells]) + " |")
    return "\n".join(lines) + "\n"


def compare(paths: list[Path], out: Path) -> list[dict[str, Any]]:
    """Write compare.csv/.md/plots for the jobs under `paths` into `out`; return the rows."""
    from c2f_exp.analysis.plots import plot_all

    jobs = find_jobs(paths)
    if not jobs:
        raise FileNotFoundError(f"compare: no runs (manifest.json or .hydra/) under {paths}")
    rows = [load_job(j) for j in jobs]
    if len({r["job"] for r in rows}) < len(rows):  # several sweeps: name jobs by their path
        for r in rows:
            r["job"] = "/".join(Path(r["path"]).parts[-3:])
    swept = swept_params(rows)
    columns, flat = table(rows, swept)
    params = [short_name(k) for k in swept]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "compare.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(flat)
    (out / "compare.md").write_text(markdown(columns, flat, params))
    plot_all(flat, params, out)
    return flat


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m c2f_exp.compare", description=__doc__)
    ap.formatter_class = argparse.RawDescriptionHelpFormatter
    ap.add_argument("dirs", nargs="+", type=Path, help="multirun dirs, run dirs, or folders")
    ap.add_argument("--out", type=Path, default=None, help="default: the first dir")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        flat = compare(a.dirs, a.out or a.dirs[0])
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = sum(d["status"] != "done" for d in flat)
    print(f"{len(flat)} jobs ({failed} failed): {(a.out or a.dirs[0]) / 'compare.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
