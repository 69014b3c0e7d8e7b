"""Zero-config fleets: find embedding servers where the user allows looking.

``DiscoverySpec`` says where (each source opt-in or local: see ``_sources``), ``scan``
asks those addresses and nothing else, identifies what answers and keeps the servers
that serve the model with the fleet's digest and dimension. No Dask here: discovery on
each worker of a cluster is ``cluster._discover``'s.
"""

from ._identify import KINDS, ModelEntry, NotEmbeddingServer, Server, identify
from ._scan import Discovery, DiscoverySpec, is_this_host, merge, probe, scan, select
from ._sources import WELL_KNOWN_PORTS, Candidate, ollama_host

__all__ = ["KINDS", "WELL_KNOWN_PORTS", "Candidate", "Discovery", "DiscoverySpec", "ModelEntry",
           "NotEmbeddingServer", "Server", "identify", "is_this_host", "merge", "ollama_host",
           "probe", "scan", "select"]
