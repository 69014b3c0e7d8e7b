"""Settings from three places, in this order: a keyword given to ``Embedder``, Dask's
config under ``sollol-dask`` (files, ``dask.config.set``, ``DASK_SOLLOL_DASK__*``
environment variables), the defaults shipped in ``sollol-dask.yaml``.

Resolved once, on the client, into a ``RouterSettings`` that the WorkerPlugin ships:
workers do not see ``dask.config.set`` calls made on the client.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any

import dask.config
import yaml

from ._exceptions import ConfigurationError
from ._node import Node, resolve_nodes
from ._settings import RouterSettings
from .backends import EmbedOptions

DEFAULTS_FILE = os.path.join(os.path.dirname(__file__), "sollol-dask.yaml")
with open(DEFAULTS_FILE) as _file:
    DEFAULTS: dict = yaml.safe_load(_file)
dask.config.update_defaults(DEFAULTS)

# Settings that are request options (EmbedOptions) rather than router settings.
_REQUEST = tuple(f.name for f in dataclasses.fields(EmbedOptions) if f.name != "model")
_ROUTER = tuple(f.name for f in dataclasses.fields(RouterSettings)
                if f.name not in ("nodes", "opts", "fleet"))
NAMES = _ROUTER + _REQUEST


def config_key(name: str) -> str:
    return "sollol-dask." + name.replace("_", "-")


def resolve_settings(nodes: Iterable[str | Node] | str | Node | None, model: str,
                     given: dict[str, Any]) -> RouterSettings:
    """``RouterSettings`` from keywords (None: not given), then dask.config."""
    values = {name: given[name] if given.get(name) is not None
              else dask.config.get(config_key(name)) for name in NAMES}
    policy = values["length_policy"]
    if policy and given.get("truncate") is not None and given["truncate"] != (policy == "truncate"):
        raise ConfigurationError(
            f"truncate={given['truncate']} contradicts length_policy={policy!r}: give one of them")
    return RouterSettings(
        nodes=resolve_nodes(nodes),
        opts=EmbedOptions(model=model, **{k: values[k] for k in _REQUEST}),
        **{k: values[k] for k in _ROUTER},
    )
