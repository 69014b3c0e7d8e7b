"""Run benchmark scenarios and write benchmarks/results/<name>.json.

    python -m benchmarks                 # all
    python -m benchmarks sim_rate ...    # some
"""

from __future__ import annotations

import json
import sys

from . import broker_load, ceiling, fleet, foundation, http2, pipeline, saturation
from ._common import save

SCENARIOS = {
    "sim_rate": foundation.sim_rate,
    "embed_three_nodes": foundation.embed_three_nodes,
    "parquet_throughput": pipeline.parquet_throughput,
    "larger_than_memory": pipeline.larger_than_memory,
    "s1_identical": saturation.identical,
    "s2_heterogeneous": saturation.heterogeneous,
    "s3_node_outage": saturation.node_outage,
    "s4_scale_out": saturation.scale_out,
    "s5_client_ceiling": ceiling.client_ceiling,
    "s6_real_llama_server": ceiling.real_llama_server,
    "s7_large_fleet": fleet.large_fleet,
    "s7_churn_mixed": fleet.churn_and_mixed,
    "s7_broker_load": broker_load.broker_load,
    "http2_vs_http1": http2.http2_vs_http1,
}


def main(names: list[str]) -> int:
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        print(f"unknown scenario(s): {', '.join(sorted(unknown))}; known: {', '.join(SCENARIOS)}")
        return 2
    for name in names or list(SCENARIOS):
        result = SCENARIOS[name]()
        path = save(name, result)
        print(f"== {name} -> {path}\n{json.dumps(result, indent=1, default=float)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
