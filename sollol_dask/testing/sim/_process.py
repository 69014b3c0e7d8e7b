"""Run a simulated node as its own process (benchmarks, kill tests, the demo)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys


class SimProcess:
    """``sollol-dask sim`` in a child process; ``url`` is known once it listens.

    >>> with SimProcess("cpu", "--load-seconds", "0") as node:
    ...     print(node.url)
    """

    def __init__(self, profile: str = "gpu", *args: str, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        cmd = [sys.executable, "-m", "sollol_dask", "sim", "--profile", profile,
               "--host", host, "--port", str(port), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        line = self.proc.stdout.readline()  # "listening on http://host:port"
        if "listening on" not in line:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self.kill()
            raise RuntimeError(f"sim did not start: {line.strip()} {err.strip()}")
        self.url = line.strip().rsplit(" ", 1)[-1]

    def kill(self) -> None:
        """SIGKILL: the node dies as a crashed process does."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()

    def __enter__(self) -> SimProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

