"""Print the results as the markdown table of benchmarks/README.md:
`python -m benchmarks.table`."""

from __future__ import annotations

import json

from ._common import RESULTS


def _load(name: str):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _eff(entry: dict, method: str) -> str:
    return f"{entry[method]['efficiency']:.2f}" if method in entry else "-"


def _setup(entry: dict) -> str:
    seconds = entry.get("sollol_dask", {}).get("setup_seconds")
    return f"{seconds:.1f}" if seconds is not None else "-"


def main() -> None:
    print("| scenario | seed | round_robin | sollol_dask | target | sollol_dask set-up s "
          "(untimed) | command |")
    print("|---|---|---|---|---|---|---|")
    for name, label, target in (("s1_identical", "1. 4 identical Ollama-like nodes", "0.95"),
                                ("s2_heterogeneous", "2. 1 GPU-like + 3 CPU-like nodes", "0.95"),
                                ("s3_node_outage", "3. a node down from 30% to 70%", "0.90")):
        data = _load(name)
        if data:
            print(f"| {label} | {_eff(data, 'seed')} | {_eff(data, 'round_robin')} | "
                  f"{_eff(data, 'sollol_dask')} | {target} | {_setup(data)} | "
                  f"`python -m benchmarks {name}` |")
    scale = _load("s4_scale_out") or {}
    for count, data in scale.items():
        print(f"| 4. scale-out, {count} CPU-like nodes | - | {_eff(data, 'round_robin')} | "
              f"{_eff(data, 'sollol_dask')} | 0.95 | {_setup(data)} | "
              f"`python -m benchmarks s4_scale_out` |")
    ceiling = _load("s5_client_ceiling") or {}
    if ceiling:
        print("\n| client ceiling (scenario 5) | embeddings/s (1 process) | texts per request "
              "| client CPU us/embedding | bare parse us/embedding | ratio (target <= 1.5) |")
        print("|---|---|---|---|---|---|")
        for key, row in ceiling.items():
            print(f"| {key} | {row['embeddings_per_s']:.0f} | {row.get('mean_batch', '-')} | "
                  f"{row['client_cpu_us_per_embedding']:.1f} | "
                  f"{row['bare_parse_us_per_embedding']:.1f} | {row['overhead_ratio']:.2f} |")
    llama = _load("s6_real_llama_server")
    if llama:
        print(f"\nScenario 6, real llama-server (MiniLM, 2 cores): plain batched loop "
              f"{llama['plain_loop_rate']:.0f}/s, sollol_dask {llama['sollol_dask_rate']:.0f}/s "
              f"(ratio {llama['ratio']:.2f}); `python -m benchmarks s6_real_llama_server`")
    fleet = _load("s7_large_fleet") or {}
    if fleet:
        print("\n| large fleet (scenario 7) | workers | rows | efficiency (target) | client CPU/s "
              "| scheduler CPU/s | workers CPU/s | sims CPU/s | leases/s | scheduler us/lease "
              "| max in flight (cap 2) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for row in fleet.values():
            target = "0.90" if row["nodes"] >= 1024 else "0.95"
            cpu = row["cpu_per_second"]
            print(f"| {row['nodes']} cpu sims | {row['workers']} | {row['rows']} | "
                  f"{row['efficiency']:.2f} ({target}) | {cpu['client']:.2f} | "
                  f"{cpu['scheduler']:.2f} | {cpu['workers']:.2f} | {cpu['sims']:.2f} | "
                  f"{row['leases_per_second']:.0f} | {row['scheduler_cpu_us_per_lease']:.0f} | "
                  f"{row['sim_max_inflight']} |")
    broker = _load("s7_broker_load") or {}
    if broker:
        print("\n| slot broker alone (scenario 7) | leases a request | broker CPU us/lease "
              "| leases per CPU second |")
        print("|---|---|---|---|")
        for row in broker.values():
            print(f"| {row['nodes']:,} nodes, all slots held | {row['bulk']} | "
                  f"{row['cpu_us_per_lease']:.0f} | {row['leases_per_cpu_second']:,.0f} |")
    for name in ("sim_rate", "embed_three_nodes", "parquet_throughput", "larger_than_memory"):
        data = _load(name)
        if data:
            print(f"\n`python -m benchmarks {name}`: `{json.dumps(data, default=float)[:400]}`")


if __name__ == "__main__":
    main()
