"""The llama-server installer: build flags in the cache key, one clear error for a broken binary."""

from __future__ import annotations

import os
import stat

import pytest

from .llama import GGUF, installer


def test_cache_key_changes_with_the_build_flags(monkeypatch):
    monkeypatch.delenv("SOLLOL_LLAMA_CMAKE_ARGS", raising=False)
    portable = installer.build_key()
    monkeypatch.setenv("SOLLOL_LLAMA_CMAKE_ARGS", "-DGGML_NATIVE=ON")
    native = installer.build_key()
    assert portable != native
    assert portable.startswith(installer.VERSION) and native.startswith(installer.VERSION)
    assert "-DGGML_NATIVE=OFF" in installer.PORTABLE_CMAKE_ARGS
    assert "-DGGML_AVX512=OFF" in installer.PORTABLE_CMAKE_ARGS


def test_a_binary_that_dies_on_its_first_embedding_gives_one_clear_error(tmp_path):
    """As the native build did on a CPU that reports AVX-512 but faults on it: the server
    starts, then dies of SIGILL. The error names the command, the signal and its stderr."""
    if not GGUF.exists():
        pytest.fail(f"{GGUF} is missing: ../shared must sit beside the repo")
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\n"
                    "echo 'init: embeddings required but some input tokens were not marked as "
                    "outputs' >&2\nkill -ILL $$\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(installer.LlamaServerError) as info:
        installer.check_binary(fake)
    message = str(info.value)
    assert "llama-server failed its check: it exited while starting" in message
    assert f"command: {fake} -m {GGUF}" in message
    assert "killed by signal SIGILL (4)" in message
    assert "some input tokens were not marked as outputs" in message


@pytest.mark.llama
def test_the_installed_server_is_the_portable_build_and_embeds():
    """What `make llama-server` installed: our flags (not a foreign or native build), and it
    embeds the reference text (the check the real-server tests rely on)."""
    assert installer.installed_key() == installer.build_key()
    binary = installer.checked_binary()
    assert os.access(binary, os.X_OK)
