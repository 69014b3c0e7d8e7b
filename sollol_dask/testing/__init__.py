"""For tests, benchmarks and the demo: simulated embedding nodes (``SimNode`` on a real
port, ``SimProcess`` in a child process) and a socket-free mock pool for unit tests.
Product code never imports this package (``tests/test_layers.py``); only the
``sollol-dask sim`` and ``demo`` commands do."""

from .sim import (PROFILES, Counters, Faults, SimFleet, SimNode, SimProcess, SimProfile, count_tokens,
                  sim_digest, sim_vector, sim_vectors, truncate_text)

__all__ = ["PROFILES", "Counters", "Faults", "SimFleet", "SimNode", "SimProcess", "SimProfile", "count_tokens",
           "sim_digest", "sim_vector", "sim_vectors", "truncate_text"]
