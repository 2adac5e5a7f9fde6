"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`): enough
to log in to a page that asks for HTTP basic authentication, as a user types a name and password into
the browser's dialog, and to read what the page then shows. No driver library: the protocol is JSON
messages, each ended by a NUL byte, on the child's file descriptors 3 (in) and 4 (out)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from mnistcnn.team import ui


class Browser:
    """One headless Chromium with one page; `login` is what it answers a request for credentials
    (None: it cancels, as a user closing the dialog). `launcher` runs it, for example
    ("unshare", "--net"): in a network namespace of its own, with no network at all."""

    def __init__(self, profile: Path, login: tuple[str, str] | None, launcher: Sequence[str] = ()):
        to_child, self._out = os.pipe()
        self._in, from_child = os.pipe()

        def descriptors() -> None:  # in the child, before exec: its fds 3 and 4 are the pipes' ends
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        command = [*launcher, ui.CHROMIUM, *ui.HEADLESS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                   "about:blank"]
        self.process = subprocess.Popen(command, preexec_fn=descriptors, close_fds=False,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self.login, self.auth_requests, self._next, self._buffer = login, 0, 0, b""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Fetch.enable", session=True, handleAuthRequests=True, patterns=[{"urlPattern": "*"}])

    def call(self, method: str, session: bool = False, timeout: float = 30, **params) -> dict:
        """Send one command and return its result, answering the page's requests meanwhile."""
        self._next += 1
        ident = self._next
        message = {"id": ident, "method": method, "params": params,
                   **({"sessionId": self.session} if session else {})}
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for reply in self._read(deadline - time.monotonic()):
                if reply.get("id") == ident:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
        raise TimeoutError(f"Chromium did not answer {method} within {timeout} s")

    def _read(self, timeout: float) -> list[dict]:
        """The messages that arrive within `timeout`; events are handled, replies returned."""
        ready, _, _ = select.select([self._in], [], [], max(timeout, 0))
        if not ready:
            return []
        chunk = os.read(self._in, 1 << 20)
        if not chunk:
            raise RuntimeError("Chromium closed its pipe")
        *messages, self._buffer = (self._buffer + chunk).split(b"\0")
        replies = []
        for message in map(json.loads, messages):
            if message.get("method") == "Fetch.requestPaused":
                self._send("Fetch.continueRequest", requestId=message["params"]["requestId"])
            elif message.get("method") == "Fetch.authRequired":
                self.auth_requests += 1
                answer = ({"response": "ProvideCredentials", "username": self.login[0], "password": self.login[1]}
                          if self.login else {"response": "CancelAuth"})
                self._send("Fetch.continueWithAuth", requestId=message["params"]["requestId"],
                           authChallengeResponse=answer)
            elif "id" in message:
                replies.append(message)
        return replies

    def _send(self, method: str, **params) -> None:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params, "sessionId": self.session}
        os.write(self._out, json.dumps(message).encode() + b"\0")

    def text_once(self, url: str, wanted: list[str], timeout: float = 60) -> str:
        """Open `url`; the page's visible text once it holds every string of `wanted`, or after `timeout`."""
        self.call("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.call("Runtime.evaluate", session=True, expression="document.body ? document.body.innerText : ''",
                             returnByValue=True)["result"].get("value", "")
            if all(item in text for item in wanted):
                break
            self._read(0.5)
        return text

    def evaluate(self, expression: str, await_promise: bool = False):
        """The value of a JavaScript expression in the page (of the promise it gives: `await_promise`)."""
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=await_promise)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.process.kill()
        self.process.wait(10)
        os.close(self._in)
        os.close(self._out)
