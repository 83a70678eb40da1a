"""Calls to an OpenAI-compatible chat endpoint, with the retry rules every caller needs:
429, 5xx, timeouts and dropped connections are retried with exponential backoff, honouring the
server's Retry-After; other 4xx errors are final. What cannot be had raises ApiUnavailable with
the reason, which callers record as *missing*, never as a score."""

from __future__ import annotations

import email.utils
import os
import random
import time
from dataclasses import dataclass


class ApiUnavailable(RuntimeError):
    pass


def _retry_after(error) -> float | None:
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    if headers.get("retry-after-ms"):
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


@dataclass
class ChatClient:
    model: str
    base_url: str | None = None
    api_key: str | None = None
    timeout_s: float = 60.0
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_tokens: int = 256

    def __post_init__(self):
        from openai import OpenAI

        key = self.api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.base_url is None:
                raise ValueError("OPENAI_API_KEY is not set (needed for the OpenAI API; a local endpoint "
                                 "set by OPENAI_BASE_URL takes any key)")
            key = "unused"  # local OpenAI-compatible servers accept any key
        # Our own retry loop: it honours Retry-After and records why it gave up.
        self._client = OpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=self.timeout_s)
        self._jitter = random.Random(0)

    def complete(self, messages: list[dict]) -> str:
        import openai

        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            try:
                response = self._client.chat.completions.create(
                    model=self.model, messages=messages, temperature=0, max_tokens=self.max_tokens, seed=0)
                return response.choices[0].message.content or ""
            except openai.APIStatusError as e:
                last = f"HTTP {e.status_code}"
                if e.status_code != 429 and e.status_code < 500:
                    raise ApiUnavailable(f"{last}: {str(e)[:200]}") from None
                wait = _retry_after(e)
            except (openai.APITimeoutError, openai.APIConnectionError) as e:
                last = type(e).__name__
                wait = None
            if attempt == self.max_retries:
                break
            if wait is None:
                wait = min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * (0.5 + self._jitter.random())
            time.sleep(min(wait, self.max_backoff_s))
        raise ApiUnavailable(f"gave up after {self.max_retries + 1} attempts, last: {last}")
