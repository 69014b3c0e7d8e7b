"""Start a Dask cluster over SSH (scheduler on the first host, a worker on every other host)
and embed a parquet corpus on it.

    python embed_over_ssh.py --hosts sched,w1,w2 --node http://gpu1:11434 \
        --node http://cpu1:11434 --model nomic-embed-text corpus/ out/

Every host needs the same Python environment (``pip install sollol-dask asyncssh``; the
path of its python is --remote-python) and passwordless SSH from here.
"""

from __future__ import annotations

import argparse
import os

from distributed import Client, SSHCluster

import sollol_dask as sd


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--hosts", required=True, help="comma-separated; the first runs the scheduler")
    p.add_argument("--node", action="append", required=True, metavar="URL",
                   help="an Ollama node, as the workers reach it (repeatable)")
    p.add_argument("--model", default="nomic-embed-text")
    p.add_argument("--column", default="text")
    p.add_argument("--ssh-port", type=int, default=22)
    p.add_argument("--ssh-key", default=None, help="private key (default: ssh-agent / ~/.ssh)")
    p.add_argument("--known-hosts", default=os.path.expanduser("~/.ssh/known_hosts"),
                   help="'none' to skip host key checks (only for throwaway test hosts)")
    p.add_argument("--remote-python", default=None,
                   help="python on the hosts (default: this one's path)")
    p.add_argument("--scheduler-port", type=int, default=8786)
    p.add_argument("--dashboard-port", type=int, default=8787)
    p.add_argument("--nthreads", type=int, default=2)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    connect = {"port": args.ssh_port,
               "known_hosts": None if args.known_hosts == "none" else args.known_hosts}
    if args.ssh_key:
        connect["client_keys"] = [args.ssh_key]
    hosts = args.hosts.split(",")
    with SSHCluster(
        hosts, connect_options=connect, remote_python=args.remote_python,
        scheduler_options={"port": args.scheduler_port,
                           "dashboard_address": f":{args.dashboard_port}",
                           # the /sollol page in the dashboard's menu
                           "preload": ["sollol_dask.dashboard.preload"]},
        worker_options={"nthreads": args.nthreads},
    ) as cluster, Client(cluster) as client:
        client.wait_for_workers(len(hosts) - 1, timeout=120)
        print(f"scheduler {cluster.scheduler_address}; /sollol page: "
              f"{client.dashboard_link.replace('/status', '/sollol')}; "
              f"Prometheus: {client.dashboard_link.replace('/status', '/metrics')}", flush=True)
        with sd.Embedder(args.node, model=args.model) as emb:
            report = emb.embed_parquet(args.src, args.dst, column=args.column, client=client)
        print(report, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
