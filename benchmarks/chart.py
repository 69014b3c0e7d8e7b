"""Draw benchmarks/results/efficiency.png from the scenario JSON files."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ._common import RESULTS  # noqa: E402

METHODS = ("seed", "round_robin", "sollol_dask")


def bars() -> list[tuple[str, dict[str, float]]]:
    out = []
    for name, label in (("s1_identical", "4 identical"), ("s2_heterogeneous", "1 GPU + 3 CPU"),
                        ("s3_node_outage", "node down 30-70%")):
        path = RESULTS / f"{name}.json"
        if path.exists():
            data = json.loads(path.read_text())
            out.append((label, {m: data[m]["efficiency"] for m in METHODS if m in data}))
    path = RESULTS / "s4_scale_out.json"
    if path.exists():
        for count, data in json.loads(path.read_text()).items():
            out.append((f"{count} CPU nodes", {m: data[m]["efficiency"] for m in METHODS if m in data}))
    return out


def main() -> None:
    groups = bars()
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.27
    for k, method in enumerate(METHODS):
        xs = [i + (k - 1) * width for i in range(len(groups))]
        ys = [values.get(method, 0.0) for _, values in groups]
        ax.bar(xs, ys, width, label=method)
    ax.axhline(0.95, color="gray", linestyle="--", linewidth=1, label="target 0.95")
    ax.set_xticks(range(len(groups)), [label for label, _ in groups], rotation=15)
    ax.set_ylabel("throughput / fleet capacity")
    ax.set_ylim(0, 1.18)  # room for the legend above the bars
    ax.legend(loc="upper center", ncol=4)
    ax.set_title("Fleet efficiency, measured side by side (2 Dask worker processes, sim nodes)")
    fig.tight_layout()
    fig.savefig(RESULTS / "efficiency.png", dpi=110)


if __name__ == "__main__":
    main()
