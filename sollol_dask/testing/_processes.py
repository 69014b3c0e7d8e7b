"""Start-up and shut-down of external server processes (nginx, sshd, llama-server) that
tests and benchmarks run on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable


def wait_for_port(proc: subprocess.Popen, port: int, name: str,
                  last_words: Callable[[], str], stop: Callable[[], None],
                  seconds: float = 10.0) -> None:
    """Return once ``proc`` accepts connections on 127.0.0.1:``port``; raise naming ``name``
    (with ``last_words()``, e.g. the tail of its log) if it exits or does not listen in
    time. Readiness of an external process: its port accepts, with a deadline."""
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {last_words()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                stop()
                raise RuntimeError(f"{name} did not listen within {seconds:g} s") from None
            time.sleep(0.05)


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate ``proc`` (kill it after 10 s) and close its stderr pipe."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr:
        proc.stderr.close()
