"""sollol_dask: embed document collections across a fleet of embedding servers, on Dask."""

from ._embedder import Embedder
from ._exceptions import (
    BadResponseError,
    ConfigurationError,
    FleetWarning,
    InsecureTLSWarning,
    InputError,
    ModelNotFoundError,
    NodeError,
    NoNodeAvailableError,
    OutputError,
    SollolError,
)
from ._node import Node
from ._outcome import Failure
from ._secrets import FromEnv

__version__ = "0.1.0"

__all__ = [
    "BadResponseError",
    "ConfigurationError",
    "Embedder",
    "Failure",
    "FleetWarning",
    "FromEnv",
    "InputError",
    "InsecureTLSWarning",
    "ModelNotFoundError",
    "NoNodeAvailableError",
    "Node",
    "NodeError",
    "OutputError",
    "SollolError",
]
