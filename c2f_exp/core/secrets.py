"""Keep secrets out of everything a run writes (config copies, manifest, wandb, logs).

Policy: a secret never belongs in a config. Keys that name their secret's *environment
variable* end in `_env` (`eval.mt_bench.judge.api_key_env=OPENAI_API_KEY`) and are fine; any
other secret-looking key (`api_key`, `hf_token`, `password`, ...) is refused at validation with a
named error that hides its value (`check_no_secret_keys`). Credentials inside URLs
(`https://user:pass@host`) are allowed (a proxy may need them) but redacted wherever the run
records its config: Hydra's `.hydra/*.yaml` (rewritten at job start, `scrub_hydra_dir`), the
manifest's overrides and wandb's config (`redact`). wandb itself is told not to record the
command line (see tracking.py).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from c2f_exp.core.errors import ConfigError

REDACTED = "***redacted***"
# A key *part* (split on _ - .) that names a secret: api_key, apikey, client_secret, password;
# or a name ending in token / auth: hf_token, access_token. Not max_new_tokens, token_budget,
# tokenizer, author.
_SECRET_KEY = re.compile(
    r"(^|[_.-])(api[_-]?key|apikey|secret|password|passwd|credentials?)([_.-]|$)"
    r"|(^|[_.-])(token|auth)$",
    re.I,
)
# `scheme://userinfo@host`, also as Hydra writes a multirun's overrides (`http\://u\:pw@h`:
# `:` `,` `=` ... escaped with a backslash). The userinfo runs to the LAST `@` of the authority
# (a password may hold `@`); the authority ends at `/ ? #`, whitespace or a quote. An
# unescaped `,` does not end it: at worst a following override is redacted too.
_URL_CREDS = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*\\?://)([^/?#\s'\"]+)@")
# `key=value`; the value ends at an unescaped `,` (Hydra escapes one inside a value as `\,`)
_OVERRIDE = re.compile(r"([+~]{0,2}[A-Za-z_][\w.-]*)=((?:\\.|[^,\s'\"\]\}\\])*)")
HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")


def is_secret_key(key: str) -> bool:
    """True for `api_key`, `foo.hf_token`, `password`; False for `api_key_env`, `max_tokens`."""
    last = str(key).rsplit(".", 1)[-1].lstrip("+~")
    return bool(_SECRET_KEY.search(last)) and not last.lower().endswith("_env")


def redact_text(s: str) -> str:
    """`user:pass@` in URLs and the values of `secret_key=value` overrides, redacted."""
    s = _URL_CREDS.sub(lambda m: f"{m.group(1)}{REDACTED}@", s)
    return _OVERRIDE.sub(
        lambda m: f"{m.group(1)}={REDACTED}" if is_secret_key(m.group(1)) else m.group(0), s
    )


def install_log_redaction() -> None:
    """Redact every log record's text (`redact_text`) before any handler sees it: Hydra's
    launcher logs each job's overrides (`#0 : ...base_url=http\\://u\\:pw@h`) to the console,
    which SLURM writes to a file. A log record factory, so Hydra's own handlers are covered."""
    old = logging.getLogRecordFactory()
    if getattr(old, "_c2f_redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = old(*args, **kwargs)
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error report
            return record
        clean = redact_text(text)
        if clean != text:
            record.msg, record.args = clean, None
        return record

    factory._c2f_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def redact(obj: Any) -> Any:
    """Copy of a JSON/YAML-like container with secret values and URL credentials redacted."""
    if isinstance(obj, dict):
        return {
            k: REDACTED
            if isinstance(k, str) and is_secret_key(k) and v not in (None, "")
            else redact(v)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    return redact_text(obj) if isinstance(obj, str) else obj


def check_no_secret_keys(cfg: Any, path: str = "") -> None:
    """Raise ConfigError (value hidden) for a secret-looking key with a value anywhere in cfg."""
    from omegaconf import DictConfig

    for k in cfg:
        key = f"{path}{k}"
        if path == "" and k == "hydra":
            continue
        node = cfg._get_node(k)
        if isinstance(node, DictConfig):
            check_no_secret_keys(node, f"{key}.")
        elif is_secret_key(str(k)) and node._value() not in (None, "", "???"):
            raise ConfigError(
                f"{key} looks like a secret (value hidden): never put a secret in a config; "
                f"export it in an environment variable and name that variable in a *_env key "
                f"(e.g. eval.mt_bench.judge.api_key_env=OPENAI_API_KEY)"
            )


def scrub_yaml(path: Path) -> bool:
    """Rewrite a YAML file (Hydra's config copies, multirun.yaml) with secrets redacted.

    Returns True when it changed. Written atomically (temp file, then rename)."""
    import yaml

    if not path.is_file():
        return False
    data = yaml.safe_load(path.read_text())
    clean = redact(data)
    if clean == data:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(clean, sort_keys=False))
    tmp.replace(path)
    return True


def scrub_hydra_dir(hydra_dir: Path) -> list[Path]:
    """Redact Hydra's saved `config.yaml`, `overrides.yaml`, `hydra.yaml`; the files changed."""
    return [hydra_dir / n for n in HYDRA_FILES if scrub_yaml(hydra_dir / n)]
