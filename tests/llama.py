"""Start llama.cpp's real ``llama-server`` with the shared MiniLM GGUF on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from sollol_dask.testing._processes import stop_process

from .conftest import REPO, SHARED

GGUF = SHARED / "models" / "all-MiniLM-L6-v2-q8_0.gguf"
REFERENCE = SHARED / "models" / "all-MiniLM-L6-v2-reference.json"


def _installer():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import install_llama_server
    finally:
        sys.path.pop(0)
    return install_llama_server


installer = _installer()
free_port = installer.free_port


def server_binary() -> Path:
    """The installed llama-server, checked once per process by embedding a reference text.

    One clear error (command, exit code or signal, stderr) if the build is broken, the same
    check `make llama-server` runs.
    """
    return installer.checked_binary()


class LlamaServer:
    def __init__(self, slots: int = 16) -> None:
        if not GGUF.exists():
            raise RuntimeError(f"{GGUF} is missing: ../shared must sit beside the repo")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            installer.server_command(server_binary(), self.port, slots),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while True:  # readiness of an external process: poll /health with a deadline
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("llama-server did not become ready within 60 s")
            time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.proc)
