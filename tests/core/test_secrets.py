"""Secrets never reach disk (issues 14.2, 12.6): every file a run writes — the run dir with
Hydra's `.hydra/` copies and the job log, manifest.json, the artifact cache, wandb's offline run
files (`run-*.wandb`, debug logs, metadata) — is grepped for the secret values.

Policy under test (c2f_exp/core/secrets.py): a secret-looking config key (`api_key`, `hf_token`,
...) is refused with a named error that hides its value (keys name env vars: `*_env`);
credentials in URLs are allowed but redacted everywhere the config is recorded; wandb records
no command line; env secrets (OPENAI_API_KEY, WANDB_API_KEY, HF_TOKEN) are never copied.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from c2f_exp.core import secrets
from tests.conftest import run_cli
from tests.helpers.cli import run_inprocess

ENV_SECRETS = {
    "OPENAI_API_KEY": "sk-envsecret-AAA111",
    "WANDB_API_KEY": "wandbsecretBBB" + "2" * 26,
    "HF_TOKEN": "hf_tokensecretDDD444",
}
URL_PASS = "urlpassCCC333"
CFG_SECRETS = ("cfgsecretEEE555", "cfgsecretFFF666")


def leaks(root: Path, values) -> list[str]:
    """Every file under `root` (binary ones too) holding any of `values`."""
    found = []
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            found += [f"{p}: {v}" for v in values if v.encode() in data]
    return found


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("api_key", True),
        ("foo.nested.hf_token", True),
        ("+foo.password", True),
        ("client_secret", True),
        ("OPENAI_APIKEY", True),
        ("api_key_env", False),
        ("max_new_tokens", False),
        ("tokenizer", False),
        ("coarse.token_budget", False),
        ("access_token", True),
        ("auth", True),
        ("author", False),
    ],
)
def test_secret_looking_keys(key, secret):
    assert secrets.is_secret_key(key) is secret


def test_redaction_of_urls_overrides_and_nested_values():
    s = secrets.REDACTED
    assert secrets.redact_text("https://u:p@h/v1") == f"https://{s}@h/v1"
    assert secrets.redact_text("+a.api_key=sk1,debug=micro") == f"+a.api_key={s},debug=micro"
    assert secrets.redact_text("eval.models.x=/m/x") == "eval.models.x=/m/x"
    got = secrets.redact({"j": {"api_key": "sk", "api_key_env": "K", "u": ["http://a:b@c"]}})
    assert got == {"j": {"api_key": s, "api_key_env": "K", "u": [f"http://{s}@c"]}}


def test_scrub_yaml_rewrites_only_what_holds_a_secret(tmp_path):
    p = tmp_path / "overrides.yaml"
    p.write_text(yaml.safe_dump(["debug=micro", "+foo.hf_token=hf_abc", "x=https://u:pw@h"]))
    assert secrets.scrub_yaml(p)
    assert "hf_abc" not in p.read_text() and "pw@" not in p.read_text()
    assert yaml.safe_load(p.read_text())[0] == "debug=micro"
    assert not secrets.scrub_yaml(p)  # already clean: untouched


def test_refused_secret_keys_leave_no_value_on_disk(tmp_path, capsys, monkeypatch):
    """`+foo.api_key=...` / `+foo.nested.hf_token=...`: a named error (value hidden), and
    Hydra's .hydra/ copies, written before the job starts, are redacted."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = [f"+foo.api_key={CFG_SECRETS[0]}", f"+foo.nested.hf_token={CFG_SECRETS[1]}"]
    code, out, err = run_inprocess(args, tmp_path, capsys)
    assert code == 2 and "looks like a secret (value hidden)" in err and "*_env" in err
    assert (tmp_path / "run" / ".hydra" / "overrides.yaml").is_file()  # Hydra wrote its copy
    assert not leaks(tmp_path, CFG_SECRETS) and not any(v in out + err for v in CFG_SECRETS)


@pytest.fixture(scope="module")
def secret_run(tmp_path_factory) -> Path:
    """A full micro run (all five stages, wandb offline) with secrets in the environment and
    credentials in a URL-valued config key."""
    tmp = tmp_path_factory.mktemp("secrets")
    url = f"https://alice:{URL_PASS}@judge.example/v1"
    env = {**ENV_SECRETS, "WANDB_MODE": "offline"}
    args = ["debug=micro", "tracker=wandb", f"eval.mt_bench.judge.base_url={url}"]
    proc = run_cli(args, tmp, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert URL_PASS not in proc.stdout + proc.stderr
    return tmp


@pytest.mark.slow  # default suite < 10 min on 2 cores; run with -m slow
def test_full_micro_run_writes_no_secret_anywhere(secret_run):
    run, cache = secret_run / "run", secret_run / "cache"
    offline = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert offline, "wandb wrote no offline run file"  # the grep below covers wandb's files
    assert (run / ".hydra" / "hydra.yaml").is_file() and (cache / "eval").is_dir()
    recorded = (run / ".hydra" / "overrides.yaml").read_text()
    assert f"https://{secrets.REDACTED}@judge.example/v1" in recorded  # passed, and redacted
    assert not leaks(secret_run, [*ENV_SECRETS.values(), URL_PASS])


@pytest.mark.parametrize(
    ("text", "want"),
    [
        # Hydra's escaped form, as a multirun writes overrides.yaml / hydra.yaml (issue 25.3)
        ("u=http\\://alice\\:pw@h\\:8/v1", "u=http\\://{s}@h\\:8/v1"),
        ("a=1,u=http\\://alice\\:pw@h/v1,b=2", "a=1,u=http\\://{s}@h/v1,b=2"),
        # a password holding `@`: redacted up to the authority's LAST `@` (issue 25.4)
        ("https://alice:p@ss@h/v1", "https://{s}@h/v1"),
        ("u=http\\://alice\\:p@s@s@h\\:8", "u=http\\://{s}@h\\:8"),
        ("+a.api_key=sk\\,x,debug=micro", "+a.api_key={s},debug=micro"),
        ("mail me@x at http://h/a@b", "mail me@x at http://h/a@b"),  # not in an authority
    ],
)
def test_redaction_understands_hydra_escapes_and_at_in_passwords(text, want):
    assert secrets.redact_text(text) == want.format(s=secrets.REDACTED)


def test_multirun_records_no_url_password(tmp_path, capsys, monkeypatch):
    """A multirun writes its overrides escaped (`http\\://u\\:pw@h`): .hydra/*.yaml,
    multirun.yaml and manifest.json must still hold no password (one with `@` included)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pw = "urlpass@HHH888"
    url = f"http://alice:{pw}@judge.example/v1"
    args = [
        "hydra.mode=MULTIRUN",
        f"hydra.sweep.dir={tmp_path}/multi",
        "stages=[merge]",
        "seed=0,1",
    ]
    code, out, err = run_inprocess(
        [*args, f"eval.mt_bench.judge.base_url={url}"], tmp_path, capsys
    )
    written = {p.name for p in (tmp_path / "multi").rglob("*") if p.is_file()}
    assert {"overrides.yaml", "hydra.yaml", "manifest.json", "multirun.yaml"} <= written, (
        code,
        err[-2000:],
    )
    assert not leaks(tmp_path, ["urlpass", "HHH888"])
    assert "urlpass" not in out + err and "HHH888" not in out + err
