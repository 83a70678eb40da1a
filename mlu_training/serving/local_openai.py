"""A real OpenAI-compatible chat-completions server on 127.0.0.1, answered by a Python function.

It speaks the same HTTP and JSON as the real API, so the `openai` client cannot tell the
difference: tests and benches use it to drive OpenAIJudge and the router through real sockets,
with faults injected on purpose (429 with Retry-After, 5xx, slow answers, unparseable text). It
also lets a user serve the local rubric behind the OpenAI API (`rubric_responder`).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass(frozen=True)
class Fault:
    """What to do with one request instead of answering it normally."""

    status: int | None = None  # answer with this HTTP status
    retry_after: float | None = None  # and this Retry-After header
    delay_s: float = 0.0  # answer this late (past the client's timeout, say)
    text: str | None = None  # answer 200 with this content instead


class LocalChatServer:
    def __init__(self, respond: Callable[[dict], str], latency_s: float = 0.0, host: str = "127.0.0.1", port: int = 0):
        self.respond = respond
        self.latency_s = latency_s
        self.faults: deque[Fault] = deque()
        self.requests = 0  # every request received
        self.answered = 0  # requests answered 200 with a completion
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests it was serving at once
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, payload: dict | None = None, headers: dict | None = None):
                body = json.dumps(payload or {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout we provoked)

            def do_GET(self):  # noqa: N802
                if self.path.rstrip("/").endswith("/models"):
                    return self._send(200, {"object": "list", "data": [{"id": "local", "object": "model"}]})
                self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server._lock:
                    server.requests += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    fault = server.faults.popleft() if server.faults else None
                try:
                    self._answer(body, fault)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _answer(self, body: dict, fault: Fault | None) -> None:
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": "not found"}})
                time.sleep(server.latency_s + (fault.delay_s if fault else 0.0))
                if fault and fault.status:
                    headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
                    return self._send(fault.status, {"error": {"message": f"injected {fault.status}",
                                                               "type": "injected"}}, headers)
                content = fault.text if fault and fault.text is not None else server.respond(body)
                with server._lock:
                    server.answered += 1
                self._send(200, {
                    "id": f"chatcmpl-{server.requests}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "local"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                })

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self.faults.extend(faults)

    def __enter__(self) -> "LocalChatServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def last_user_text(body: dict) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") for part in content if part.get("type") == "text")


def rubric_responder(body: dict) -> str:
    """Grades our judge prompts with the local rules, answering as an API judge would."""
    from ..judge.base import JudgeItem
    from ..judge.local import forget_rule, retain_rule
    from ..judge.prompts import parse_prompt

    parsed = parse_prompt(last_user_text(body))
    if parsed is None:
        return "I cannot grade this."
    kind, fields = parsed
    rule = (forget_rule if kind == "forget" else retain_rule)(JudgeItem(**fields))
    return f"{rule.reason[:1].upper()}{rule.reason[1:]}. Rating: [[{rule.score}]]"
