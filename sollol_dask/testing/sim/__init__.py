"""Simulated embedding nodes for tests, benchmarks and the demo (see ``_server``)."""

from ._profiles import PROFILES, SimProfile
from ._fleet import SimFleet
from ._process import SimProcess
from ._server import Counters, Faults, SimNode
from ._vectors import count_tokens, sim_digest, sim_vector, sim_vectors, truncate_text

__all__ = ["PROFILES", "Counters", "Faults", "SimFleet", "SimNode", "SimProcess", "SimProfile", "count_tokens",
           "sim_digest", "sim_vector", "sim_vectors", "truncate_text"]
