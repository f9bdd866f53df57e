"""Screenshot of MLflow's compare-runs view for a merge_coefficient sweep (a script, not CI).

    python tests/benchmarks/mlflow_screenshot.py [--out docs/img/mlflow_compare.png]
        [--cache DIR] [--chromium /usr/bin/chromium-headless-shell] [override ...]

Starts `mlflow server` on a free port (SQLite + artifacts in a temp dir), runs
`python -m c2f_exp -m sweep=merge_coefficient tracker=mlflow merger.filter=none` against it
(with `--cache outputs/cache` after a default run, only the merges and evals run; add
`debug=micro` for a quick look at a flat plot) (extra overrides narrow it, e.g.
`merger.coefficient=0,0.5,1,2,[0.5,1.5]`), opens the parent run's children in MLflow's
compare-runs page in headless Chromium, puts final/facts and final/mt_bench beside the λ
axes of the parallel-coordinates plot, and saves a full-page PNG.

Needs `pip install playwright` and a Chromium: Playwright's own browser download is not
reachable here, so it drives the Debian build (`apt-get install chromium-headless-shell`), or
the path given by --chromium / $CHROMIUM.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.helpers.mlflow_server import MlflowServer  # noqa: E402

SWEEP = ["sweep=merge_coefficient", "tracker=mlflow", "merger.filter=none"]


def run_sweep(url: str, work: Path, cache: Path, extra: list[str]) -> Path:
    sw = work / "sweep"
    cmd = [sys.executable, "-m", "c2f_exp", "-m", f"hydra.sweep.dir={sw}",
           f"paths.cache_dir={cache}", *SWEEP, *extra]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "TQDM_DISABLE": "1"}
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"sweep failed:\n{proc.stderr[-3000:]}")
    print(f"sweep: {time.time() - t0:.0f}s, {sw}")
    return sw


def compare_url(url: str, sweep_dir: Path) -> str:
    """MLflow's compare-runs page for the children of the sweep's parent run."""
    from mlflow.tracking import MlflowClient

    parent = json.loads((sweep_dir / "mlflow_parent.json").read_text())
    (entry,) = parent.values()
    client = MlflowClient(tracking_uri=url)
    children = client.search_runs(
        [entry["experiment_id"]], f"tags.mlflow.parentRunId = '{entry['run_id']}'"
    )
    ids = [r.info.run_id for r in sorted(children, key=lambda r: r.info.run_name)]
    query = urllib.parse.urlencode(
        {"runs": json.dumps(ids), "experiments": json.dumps([entry["experiment_id"]])}
    )
    print(f"{len(ids)} runs under parent {entry['run_id']}")
    return f"{url}/#/compare-runs?{query}"


PARAMS = ["lambda", "lambda_first", "lambda_last"]
METRICS = ["final/facts", "final/mt_bench"]  # what the λ axes are compared against


def choose_metrics(page, metrics: list[str]) -> None:
    """Show λ against `metrics` on the parallel-coordinates plot: "Clear All" (MLflow
    preselects a metric of its own), then type the λ params and the metrics into their boxes
    (antd selects; best effort)."""
    try:
        page.get_by_role("button", name="Clear All").click()
        for i, names in ((0, PARAMS), (1, metrics)):
            box = page.get_by_role("combobox").nth(i)  # Parameters, then Metrics
            for name in names:
                box.click()
                page.keyboard.type(name)
                time.sleep(0.5)
                page.keyboard.press("Enter")
            page.keyboard.press("Escape")
    except Exception as e:  # the UI moved: keep MLflow's own choice, say so
        print(f"warning: could not choose the axes ({type(e).__name__}: {e})")


def screenshot(page_url: str, out: Path, chromium: str) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("playwright is not installed: pip install playwright")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1100})
        page.goto(page_url, wait_until="load", timeout=120_000)  # the UI polls: never idle
        try:
            page.get_by_text("lambda_first").first.wait_for(timeout=90_000)  # params rendered
        except Exception:
            print("warning: the params table did not show within 90 s; screenshot anyway")
        time.sleep(3)  # charts finish drawing
        choose_metrics(page, METRICS)
        time.sleep(3)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    print(f"screenshot: {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "mlflow_compare.png")
    ap.add_argument("--cache", type=Path, default=None, help="artifact cache (default: temp)")
    default_chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium-headless-shell")
    ap.add_argument("--chromium", default=default_chromium)
    ap.add_argument("overrides", nargs="*", help="extra overrides for the sweep")
    a = ap.parse_args()
    if not Path(a.chromium).is_file():
        sys.exit(f"no Chromium at {a.chromium}: apt-get install chromium-headless-shell")
    with tempfile.TemporaryDirectory(prefix="mlflow-shot-") as tmp:
        work = Path(tmp)
        server = MlflowServer(work)
        try:
            url = server.wait()
            sw = run_sweep(url, work, a.cache or work / "cache", a.overrides)
            screenshot(compare_url(url, sw), a.out, a.chromium)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
