"""Wire formats, picked by a node's ``api`` from a registry (no if-chains)."""

from __future__ import annotations

from ..policy._identity import NodeInfo
from ._base import Backend, EmbedOptions, Reply
from .ollama import OllamaBackend
from .openai import OpenAIBackend

BACKENDS: dict[str, Backend] = {"ollama": OllamaBackend(), "openai": OpenAIBackend()}

__all__ = ["BACKENDS", "Backend", "EmbedOptions", "NodeInfo", "OllamaBackend", "OpenAIBackend",
           "Reply"]
