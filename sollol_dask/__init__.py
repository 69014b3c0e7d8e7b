"""sollol_dask: embed document collections across a fleet of embedding servers, on Dask."""

from ._embedder import Embedder
from .cluster._discover import discover
from .discovery import Discovery, DiscoverySpec
from .cluster._batches import BatchEmbedder
from ._exceptions import (
    BadResponseError,
    ConfigurationError,
    FleetWarning,
    InputError,
    InsecureTLSWarning,
    ModelNotFoundError,
    NodeError,
    NoNodeAvailableError,
    OutputError,
    SollolError,
)
from ._node import Node
from ._outcome import Failure
from ._report import EmbedReport
from ._secrets import FromEnv
from ._settings import RouterSettings
from .backends import EmbedOptions
from .dashboard import FleetStatus
from .policy._identity import Reference

__version__ = "0.1.0"

__all__ = [
    "BadResponseError",
    "BatchEmbedder",
    "ConfigurationError",
    "Discovery",
    "DiscoverySpec",
    "EmbedOptions",
    "EmbedReport",
    "Embedder",
    "Failure",
    "FleetStatus",
    "FleetWarning",
    "FromEnv",
    "InputError",
    "InsecureTLSWarning",
    "ModelNotFoundError",
    "NoNodeAvailableError",
    "Node",
    "NodeError",
    "OutputError",
    "Reference",
    "RouterSettings",
    "SollolError",
    "discover",
]
