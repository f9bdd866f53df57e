"""Chat clients the LLM judges talk to: any OpenAI-compatible server, or a local HF chat model.

`OpenAICompatibleClient` is a minimal `POST {base_url}/chat/completions` client on httpx (the
`openai` package is not a dependency of this project). The API key is read from the environment
variable named in config, kept only in the request headers, and never logged or written.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Protocol

from c2f_exp.core.errors import C2FError, ConfigError
from c2f_exp.core.secrets import redact_text

log = logging.getLogger(__name__)
Messages = list[dict[str, str]]


class JudgeUnavailable(C2FError):
    """The judge did not answer after all request retries (the match is scored -1)."""


class ChatClient(Protocol):
    def complete(self, messages: Messages, temperature: float, max_tokens: int) -> str:
        """The assistant's reply to `messages` (OpenAI chat format)."""


class OpenAICompatibleClient:
    """Chat completions against OpenAI, vLLM, llama.cpp or any server speaking that API."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout_s: float = 120.0,
        request_retries: int = 3,
        retry_backoff_s: float = 1.0,
    ):
        import httpx

        logging.getLogger("httpx").setLevel(logging.WARNING)  # not one INFO line per request
        headers = {}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ConfigError(
                    f"eval.mt_bench.judge.api_key_env: environment variable {api_key_env} is "
                    f"not set; export {api_key_env}=<key> (keys are read from the environment "
                    "only), or set api_key_env=null for a server without keys"
                )
            headers["Authorization"] = f"Bearer {key}"
        self.base_url, self.model, self._key_env = base_url.rstrip("/"), model, api_key_env
        self.shown_url = redact_text(self.base_url)  # for messages: no user:pass@
        self.request_retries, self.backoff = request_retries, retry_backoff_s
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self._timeout = timeout_s

    def __repr__(self) -> str:  # never show the headers
        return f"OpenAICompatibleClient({self.shown_url!r}, model={self.model!r})"

    def _refused(self, status: int) -> ConfigError:
        src = f"the key in ${self._key_env}" if self._key_env else "a request without a key"
        return ConfigError(
            f"judge server {self.shown_url} refused {src} (HTTP {status}); "
            "check eval.mt_bench.judge.api_key_env"
        )

    def check(self) -> None:
        """Cheap reachability check (GET /models) for the stage preflight."""
        import httpx

        try:
            r = self._http.get("/models", timeout=min(10.0, self._timeout))
        except httpx.HTTPError as e:
            raise ConfigError(
                f"cannot reach judge server eval.mt_bench.judge.base_url="
                f"{self.shown_url} ({type(e).__name__}); start it or fix the URL"
            ) from None
        if r.status_code in (401, 403):
            raise self._refused(r.status_code)

    def complete(self, messages: Messages, temperature: float, max_tokens: int) -> str:
        import httpx

        body = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        why = ""
        for attempt in range(self.request_retries + 1):
            if attempt:
                time.sleep(min(30.0, self.backoff * 2 ** (attempt - 1)))
            try:
                r = self._http.post("/chat/completions", json=body)
            except httpx.TransportError as e:
                why = type(e).__name__
                continue
            if r.status_code in (401, 403):
                raise self._refused(r.status_code)
            if r.status_code == 429 or r.status_code >= 500:
                why = f"HTTP {r.status_code}"
                continue
            if r.status_code >= 400:
                raise ConfigError(
                    f"judge server {self.shown_url} rejected the request (HTTP "
                    f"{r.status_code}: {r.text[:200]}); check "
                    f"eval.mt_bench.judge.model={self.model}"
                )
            try:
                return r.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                why = "malformed response"
        raise JudgeUnavailable(
            f"judge {self.shown_url} failed {self.request_retries + 1} time(s): {why}"
        )


class HFChatClient:
    """A local chat model (transformers) answering with its chat template."""

    def __init__(self, path: str, dtype: str = "auto", device: str = "auto", seed: int = 0):
        from c2f_exp.evaluation.lineup import ModelRef, load

        self.model, self.tok = load(ModelRef("judge", path, True, path), dtype, device)
        self.seed = seed

    def _prompt(self, messages: Messages) -> str:
        try:
            return self.tok.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        except Exception:  # templates without a system role: fold it into the first turn
            sys_msg = " ".join(m["content"] for m in messages if m["role"] == "system")
            rest = [dict(m) for m in messages if m["role"] != "system"]
            rest[0]["content"] = f"{sys_msg}\n\n{rest[0]['content']}".strip()
            return self.tok.apply_chat_template(rest, tokenize=False, add_generation_prompt=True)

    def complete(self, messages: Messages, temperature: float, max_tokens: int) -> str:
        import torch

        enc = self.tok(self._prompt(messages), add_special_tokens=False, return_tensors="pt")
        enc = enc.to(self.model.device)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and enc.input_ids.shape[1] + max_tokens > limit:
            max_tokens = max(1, limit - enc.input_ids.shape[1])
            enc = {k: v[:, -(limit - max_tokens) :] for k, v in enc.items()}
        torch.manual_seed(self.seed)
        sample = (
            {"do_sample": True, "temperature": temperature}
            if temperature > 0
            else {"do_sample": False}
        )
        with torch.no_grad():
            out = self.model.generate(
                **enc, max_new_tokens=max_tokens, **sample, pad_token_id=self.tok.pad_token_id
            )
        return self.tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
