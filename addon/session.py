"""Backend process and connection, driven by a timer; no bpy here (tested without Blender).

`Session.tick()` is the only place that touches the socket: it drains every message that has
arrived (non-blocking `poll(0)`), dispatches each to the request that asked for it, notices a dead
process or a backend that stopped answering, and returns quickly so Blender's UI never waits.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import engines, logs

log = logs.get_logger(__name__)

SERVE_DEFAULT_PORT = 5555  # `segparts serve`'s default: where a server started by hand listens
HELLO_RETRY_S = 1.0
START_TIMEOUT_S = 60.0  # first start may compile/import a lot; hello answers as soon as it is up
CONNECT_TIMEOUT_S = 5.0  # a backend we did not start must answer hello this fast
QUICK_TIMEOUT_S = 30.0  # upload/cancel/status replies
JOB_SILENCE_S = 10.0  # while a job runs, ask `status` when nothing came for this long ...
STATUS_TIMEOUT_S = 10.0  # ... and call the backend unreachable if that gets no answer either


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Config:
    python: str = ""  # backend interpreter (with segparts installed); "" = not set
    host: str = "127.0.0.1"
    port: int = SERVE_DEFAULT_PORT
    device: str = "auto"
    auto_start: bool = True
    models_dir: str = ""
    state_dir: str = ""  # where logs and the token file go (the extension's user folder)
    manifest: str = ""  # model manifest shipped with the bundled backend
    protocol: int = 1  # the wire protocol this add-on speaks (its _shared/wire.py)
    version: str = ""  # the add-on's version ("" = unknown: not compared)

    @property
    def token_file(self) -> Path:
        return Path(self.state_dir) / f"token-{self.port}"

    @property
    def log_file(self) -> Path:
        """The backend's own log, rotated by the backend (`serve --log-file`: 5 MB x 3)."""
        return Path(self.state_dir) / "backend.log"

    @property
    def console_file(self) -> Path:
        """What the process printed (start-up line, a crash before logging starts): one run's
        worth, emptied at each start, so it never grows across sessions."""
        return Path(self.state_dir) / "backend-console.log"


class BackendProcess:
    """The backend as a child process running its own Python (never Blender's)."""

    def __init__(self, config: Config, parent_pid: int | None = None):
        self.config = config
        self.parent_pid = os.getpid() if parent_pid is None else parent_pid
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        c = self.config
        return [
            c.python,
            "-m",
            "segparts",
            "serve",
            "--host",
            c.host,
            "--port",
            str(c.port),
            "--device",
            c.device,
            "--token-file",
            str(c.token_file),
            "--parent-pid",
            str(self.parent_pid),
            "--log-file",
            str(c.log_file),
        ]

    def start(self) -> None:
        c = self.config
        if not c.python:
            raise RuntimeError("no backend Python set: choose it in the add-on preferences or press 'Set up backend'")
        if not Path(c.python).exists():
            raise RuntimeError(f"backend Python {c.python!r} does not exist")
        Path(c.state_dir).mkdir(parents=True, exist_ok=True)
        c.token_file.unlink(missing_ok=True)  # never read a previous run's token
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # Blender's paths must not leak into the backend's Python
        env.pop("PYTHONHOME", None)
        if c.models_dir:
            env["SEGPARTS_MODELS"] = c.models_dir
        if c.manifest and Path(c.manifest).exists() and "SEGPARTS_MANIFEST" not in env:
            env["SEGPARTS_MANIFEST"] = c.manifest
        with open(c.console_file, "wb") as console:  # the child keeps its own handle
            flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
            log.info("starting the backend: %s", " ".join(self.command()))
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env=env,
                creationflags=flags,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 1.0) -> None:
        """End the process: SIGTERM (the server stops its workers and removes its token), then
        SIGKILL if it has not gone after `timeout` s (a frozen process ignores SIGTERM)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        self.proc = None

    def log_tail(self, n_lines: int = 3) -> str:
        lines = []
        for path in (self.config.log_file, self.config.console_file):  # the log, then a crash's output
            try:
                lines += path.read_text(errors="replace").strip().splitlines()[-200:]
            except OSError:
                pass
        # what went wrong, not the start-up chatter (token file paths, "listening on ...")
        lines = [
            ln
            for ln in lines[-200:]
            if ln.strip() and "token" not in ln.lower() and " INFO " not in ln and "listening on" not in ln
        ]
        return " | ".join(lines[-n_lines:])


@dataclass
class Pending:
    op: str
    on_message: Callable | None
    deadline: float  # inf while a job is accepted and running
    job_id: str | None = None
    last_seen: float = field(default_factory=time.monotonic)
    resend: tuple | None = None  # (args, arrays) to send once more after a token change


UNAUTHORIZED = "unauthorized"  # the wire's error code (wire.UNAUTHORIZED)


class Session:
    """State machine: off -> starting -> ready; any failure -> error (with a message)."""

    def __init__(self, config: Config, client_factory: Callable):
        self.config = config
        self._client_factory = client_factory  # (host, port, token_file) -> BackendClient
        self.client: Any = None  # a _shared.client.BackendClient, made by client_factory
        self.process: BackendProcess | None = None
        self.state = "off"
        self.message = "Backend not started"
        self.hello: dict = {}
        self.warning = ""  # set at hello when the backend's version is not the add-on's
        self.pending: dict[str, Pending] = {}
        self._hello_id: str | None = None
        self._hello_sent = 0.0
        self._start_deadline = 0.0
        self._status_id: str | None = None
        self.changed = True  # the UI redraws when set

    # ---- lifecycle -----------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def start(self) -> None:
        """Connect (starting our own backend when allowed). Returns at once; tick() finishes it."""
        if self.state in ("starting", "ready"):
            return
        self._close_client()
        c = self.config
        owns = c.auto_start
        token_file = None
        if owns:
            if self.process is None or not self.process.running:
                self.process = BackendProcess(c)
                try:
                    self.process.start()
                except (OSError, RuntimeError) as exc:
                    self.process = None
                    self._fail(f"Could not start the backend: {exc}")
                    return
            token_file = c.token_file
        self.client = self._client_factory(c.host, c.port, token_file)
        self.state = "starting"
        self.message = "Starting backend…" if owns else f"Connecting to {c.host}:{c.port}…"
        self._start_deadline = time.monotonic() + (START_TIMEOUT_S if owns else CONNECT_TIMEOUT_S)
        self._send_hello()
        self.changed = True

    def stop(self) -> None:
        """Stop our backend process (if we started one) and drop the connection."""
        self._fail_pending("backend stopped")
        self._close_client()
        if self.process is not None:
            self.process.stop()
            self.process = None
        self.state, self.message, self.hello, self.warning = "off", "Backend stopped", {}, ""
        self.changed = True

    def _close_client(self):
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass
            self.client = None

    def _send_hello(self):
        self._hello_id = self.client.send("hello")
        self._hello_sent = time.monotonic()

    def _fail(self, message: str) -> None:
        log.warning("backend: %s", message)
        self.state, self.message = "error", message
        self._fail_pending(message)
        self.changed = True

    def _fail_pending(self, message: str) -> None:
        pending, self.pending = self.pending, {}
        for p in pending.values():
            if p.on_message is not None:
                p.on_message(None, message)

    # ---- requests ------------------------------------------------------------------------
    def request(
        self,
        op: str,
        args: dict | None = None,
        arrays: dict | None = None,
        on_message: Callable | None = None,
        timeout: float = QUICK_TIMEOUT_S,
    ) -> str:
        """Send one request; `on_message(msg, error_text)` gets every answer (msg None on failure)."""
        if not self.ready:
            raise RuntimeError(self.message if self.state == "error" else "the backend is not ready yet")
        req_id = self.client.send(op, args, arrays)
        self.pending[req_id] = Pending(op, on_message, time.monotonic() + timeout, resend=(args, arrays))
        return req_id

    # ---- the timer's work ----------------------------------------------------------------
    def tick(self) -> None:
        """Drain the socket and check health. Never blocks."""
        if self.client is None:
            return
        now = time.monotonic()
        try:
            messages = self.client.poll(0)
        except Exception as exc:  # a garbled frame must not kill the timer
            self._fail(f"Bad message from the backend: {exc}")
            return
        for msg in messages:
            self._dispatch(msg, now)
        if self.state == "starting":
            self._check_starting(now)
        elif self.state == "ready":
            self._check_health(now)

    def _dispatch(self, msg, now: float) -> None:
        if msg.id == self._hello_id and self.state == "starting":
            if msg.ok:
                self._on_hello(msg.result)
            else:
                self._fail(f"Backend refused hello: {(msg.error or {}).get('message', '')}")
            self.changed = True
            return
        if msg.id == self._status_id:
            self._status_id = None
            for waiting in self.pending.values():
                waiting.last_seen = now
            return
        p = self.pending.get(msg.id)
        if p is None:
            return  # an answer to a request we gave up on
        if self._resent_with_new_token(msg, p):
            return
        p.last_seen = now
        if msg.kind == "accepted":
            p.job_id = msg.result.get("job_id")
            p.deadline = float("inf")
        if msg.final:
            del self.pending[msg.id]
        if p.on_message is not None:
            error = None if msg.ok else _error_text(msg.error)
            p.on_message(msg, error)
        self.changed = True

    def _resent_with_new_token(self, msg, p: Pending) -> bool:
        """A server we connected to restarted with a new token: read the token file again and
        send the refused request once more (at most once per request)."""
        if msg.ok or (msg.error or {}).get("code") != UNAUTHORIZED or p.resend is None:
            return False
        reload = getattr(self.client, "reload_token", None)
        if reload is None or not reload():
            return False
        del self.pending[msg.id]
        args, arrays = p.resend
        req_id = self.client.send(p.op, args, arrays)
        self.pending[req_id] = Pending(p.op, p.on_message, p.deadline, p.job_id)  # no second resend
        return True

    def _on_hello(self, hello: dict) -> None:
        usable, note = engines.compatibility(
            hello, self.config.protocol, self.config.version or str(hello.get("version", ""))
        )
        if not usable:
            self._fail(note)
            return
        self.hello, self.warning = hello, note
        self.state, self.message = "ready", self._ready_message()
        if self.process is not None:  # our backend's token: never in a log record
            try:
                logs.add_secret(self.config.token_file.read_text().strip())
            except OSError:
                pass
        log.info("%s", self.message)
        if note:
            log.warning("%s", note)

    def _check_starting(self, now: float) -> None:
        if self.process is not None and not self.process.running:
            self._fail(f"Backend exited (code {self.process.exit_code}) while starting: {self.process.log_tail()}")
            return
        if now > self._start_deadline:
            where = f"{self.config.host}:{self.config.port}"
            self._fail(
                f"No backend answers at {where}"
                + ("" if self.config.auto_start else " (start one with `segparts serve` or enable Auto-start)")
            )
            return
        if now - self._hello_sent > HELLO_RETRY_S:
            self._send_hello()  # the first may have gone to a socket that was not bound yet

    def _check_health(self, now: float) -> None:
        if self.process is not None and not self.process.running:
            self._fail(
                f"Backend stopped unexpectedly (exit code {self.process.exit_code}). "
                f"Press Restart. Log: {self.process.log_tail()}"
            )
            return
        for p in list(self.pending.values()):
            if now > p.deadline:
                self._fail(f"Backend did not answer {p.op!r} in time; press Restart")
                return
        waiting = [p for p in self.pending.values() if p.job_id is not None and now - p.last_seen > JOB_SILENCE_S]
        if waiting and self._status_id is None:
            self._status_id = self.client.send("status")
            self._status_sent = now
        elif self._status_id is not None and now - self._status_sent > STATUS_TIMEOUT_S:
            self._fail("Backend is unreachable (no answer to status); press Restart")

    def _ready_message(self) -> str:
        h, c = self.hello, self.config
        where = f"own backend on port {c.port}" if c.auto_start else f"connected to {c.host}:{c.port}"
        return f"Ready: {where} ({h.get('version', '?')}, {h.get('device', '?')})"

    def engines(self) -> dict[str, dict]:
        return dict(self.hello.get("engines") or {})


def _error_text(error: dict | None) -> str:
    error = error or {}
    return str(error.get("message") or error.get("code") or "unknown error")
