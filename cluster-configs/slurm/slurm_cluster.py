"""Dask on Slurm with dask-jobqueue: the scheduler runs in this process (with the /sollol
page in its dashboard menu), each worker is a Slurm job; then embed a parquet corpus.

    python slurm_cluster.py --jobs 4 --node http://gpu1:11434 --node http://gpu2:11434 \
        /shared/corpus/ /shared/embedded/
    python slurm_cluster.py --print-job-script ...      # show the sbatch script, submit nothing
"""

from __future__ import annotations

import argparse

from dask_jobqueue import SLURMCluster
from distributed import Client

import sollol_dask as sd


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--node", action="append", required=True, metavar="URL",
                   help="an Ollama node as the worker jobs reach it (repeatable)")
    p.add_argument("--model", default="nomic-embed-text")
    p.add_argument("--column", default="text")
    p.add_argument("--jobs", type=int, default=2, help="worker jobs to submit")
    p.add_argument("--queue", default=None, help="Slurm partition")
    p.add_argument("--account", default=None)
    p.add_argument("--host", default=None, help="scheduler address to bind (default: this host)")
    p.add_argument("--scheduler-port", type=int, default=8786)
    p.add_argument("--dashboard-port", type=int, default=8787)
    p.add_argument("--print-job-script", action="store_true")
    return p.parse_args(argv)


def make_cluster(args: argparse.Namespace) -> SLURMCluster:
    scheduler = {"port": args.scheduler_port, "dashboard_address": f":{args.dashboard_port}",
                 "preload": ["sollol_dask.dashboard.preload"]}
    if args.host:
        scheduler["host"] = args.host
    # Workers only send HTTP requests and write parquet: CPU cores, no GPU needed.
    return SLURMCluster(cores=2, processes=1, memory="8GB", walltime="04:00:00",
                        queue=args.queue, account=args.account,
                        scheduler_options=scheduler)


def main(argv=None) -> int:
    args = parse(argv)
    with make_cluster(args) as cluster:
        if args.print_job_script:
            print(cluster.job_script())
            return 0
        cluster.scale(jobs=args.jobs)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=3600)  # jobs wait in the Slurm queue
            print(f"/sollol page: {client.dashboard_link.replace('/status', '/sollol')}",
                  flush=True)
            with sd.Embedder(args.node, model=args.model) as emb:
                print(emb.embed_parquet(args.src, args.dst, column=args.column,
                                        client=client), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
