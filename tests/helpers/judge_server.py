"""An OpenAI-compatible chat-completions server on 127.0.0.1 (a thread, port 0) for judge tests.

It returns canned judgments chosen by a marker in the graded answer: good, flaky (HTTP 500
first), malformed once, never rated; it records every request, so tests check headers, bodies
and retries. Used by tests/evaluation/test_mt_bench_openai.py and the 7B rehearsal test.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY_ENV, KEY = "C2F_TEST_JUDGE_KEY", "sk-test-0123456789"
REPLIES = {  # marker -> judgments returned on successive calls (None = HTTP 500)
    "GOOD": ["Accurate and complete. Rating: [[8]]"],
    "FLAKY": [None, "Fine after all. Rating: [[6]]"],
    "MALFORMED": ["I would give this 7 out of 10.", "Rating: [[7]]"],
    "NEVER": ["The answer is fine."],
}


class JudgeServer:
    def __init__(self, key: str | None = KEY):
        self.requests: list[dict] = []
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "judge-model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                auth = self.headers.get("Authorization")
                with server.lock:
                    server.requests.append({"path": self.path, "auth": auth, "body": body})
                if key is not None and auth != f"Bearer {key}":
                    return self._send(401, {"error": {"message": "invalid api key"}})
                marks = re.findall(r"MARK-(\w+)", body["messages"][-1]["content"])
                mark = marks[-1] if marks else "GOOD"
                with server.lock:
                    n = server.counts.get(mark, 0)
                    server.counts[mark] = n + 1
                replies = REPLIES[mark]
                reply = replies[min(n, len(replies) - 1)]
                if reply is None:
                    return self._send(500, {"error": {"message": "overloaded"}})
                self._send(
                    200,
                    {
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": reply},
                                "finish_reason": "stop",
                            }
                        ]
                    },
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
