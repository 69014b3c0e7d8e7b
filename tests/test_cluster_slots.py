"""Per-node caps hold across every worker process of a cluster (the scheduler's broker)."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd

import sollol_dask as sd
from sollol_dask.testing import Faults, sim_vectors

from .conftest import MODEL, local_client


def test_cap_holds_across_two_worker_processes_and_fast_node_does_most(sims):
    fast = sims("gpu")
    slow = sims("gpu", faults=Faults(slowdown=10.0))  # the same node, 10x slower
    texts = [f"cluster-wide cap {i}" for i in range(1600)]
    with local_client(4) as client:
        emb = sd.Embedder([fast.url, slow.url], model=MODEL, batch_size=16)
        ddf = dd.from_pandas(pd.DataFrame({"text": texts}), npartitions=16)
        out = emb.embed_dataframe(ddf, "text").compute()
        broker = client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.plugins["sollol-dask-slots"].state())
    vectors = np.stack(out["embedding"].to_numpy())
    assert np.array_equal(vectors, sim_vectors(MODEL, texts, 768))
    # 2 workers x 4 threads all embedding at once, yet never more than the Ollama cap (2)
    # in flight on either node, as the nodes themselves saw it.
    assert fast.counters.max_inflight == 2 and slow.counters.max_inflight <= 2
    assert broker[fast.url]["max_inflight_seen"] == 2
    # Work-conserving: the node 10x faster embedded most of the texts.
    assert fast.counters.texts > 0.8 * len(texts)
