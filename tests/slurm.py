"""A real Slurm cluster from Debian (slurm-wlm 22.05, munge) on 127.0.0.1: one controller
and three compute nodes, each its own slurmd, all on this machine.

    with SlurmCluster() as slurm:
        slurm.env            # SLURM_CONF for sbatch/squeue/scontrol
        slurm.nodes_ready()  # True once every node is idle

Three nodes because cluster-configs/slurm/dask-sbatch.sh asks for three (the scheduler on
the first, a worker on each other one). No cgroups, no accounting database, no state
outside a temporary directory: linuxproc process tracking and no task plugin, as a
container without systemd allows.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sollol_dask.testing._processes import stop_process, wait_for_port

NODES = ("n1", "n2", "n3")

_CONF = """\
ClusterName=sollol
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={dir}/munge.sock
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool/%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd-%n.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
{nodes}
PartitionName=debug Nodes={names} Default=YES MaxTime=INFINITE State=UP
"""


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SlurmCluster:
    def __init__(self) -> None:
        for binary in ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd"):
            if not Path(binary).exists():
                raise RuntimeError(f"{binary} is missing: run `make slurm` "
                                   "(apt-get install slurm-wlm munge)")
        # short: the munge socket's path must fit a sockaddr_un (108 bytes)
        self.dir = Path(tempfile.mkdtemp(prefix="sollol-slurm-"))
        self.dir.chmod(0o755)  # munged wants its socket's directory executable by all
        self.procs: list[subprocess.Popen] = []
        key = self.dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for sub in ("state", "spool"):
            (self.dir / sub).mkdir()
        ctld_port, *node_ports = _free_ports(1 + len(NODES))
        nodes = "\n".join(f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 "
                          f"Port={port} CPUs=2 State=UNKNOWN"
                          for name, port in zip(NODES, node_ports))
        self.conf = self.dir / "slurm.conf"
        self.conf.write_text(_CONF.format(dir=self.dir, ctld_port=ctld_port, nodes=nodes,
                                          names=",".join(NODES)))
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        try:
            self._start(["/usr/sbin/munged", "-F", f"--key-file={key}",
                         f"--socket={self.dir}/munge.sock", f"--log-file={self.dir}/munged.log",
                         f"--pid-file={self.dir}/munged.pid", f"--seed-file={self.dir}/seed"])
            self._wait_for_file(self.dir / "munge.sock", "munged", self.dir / "munged.log")
            ctld = self._start(["/usr/sbin/slurmctld", "-D", "-i", "-f", str(self.conf)])
            wait_for_port(ctld, ctld_port, "slurmctld",
                          lambda: self._tail(self.dir / "slurmctld.log"), self.stop)
            for name, port in zip(NODES, node_ports):
                slurmd = self._start(["/usr/sbin/slurmd", "-D", "-N", name, "-f", str(self.conf)])
                wait_for_port(slurmd, port, f"slurmd {name}",
                              lambda n=name: self._tail(self.dir / f"slurmd-{n}.log"), self.stop)
            self._wait_until_idle()
        except BaseException:
            self.stop()
            raise

    def _start(self, command: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(command, env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    @staticmethod
    def _tail(path: Path) -> str:
        return path.read_text()[-2000:] if path.exists() else f"(no {path.name})"

    def _wait_for_file(self, path: Path, name: str, log: Path, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while not path.exists():
            if time.monotonic() > deadline or self.procs[-1].poll() is not None:
                self.stop()
                raise RuntimeError(f"{name} did not start: {self._tail(log)}")
            time.sleep(0.05)

    def nodes_ready(self) -> bool:
        states = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env,
                                capture_output=True, text=True).stdout.split()
        return len(states) == len(NODES) and set(states) == {"idle"}

    def _wait_until_idle(self, seconds: float = 30.0) -> None:
        """Nodes register with the controller after their slurmd listens."""
        deadline = time.monotonic() + seconds
        while not self.nodes_ready():
            if time.monotonic() > deadline:
                sinfo = subprocess.run(["sinfo", "-N"], env=self.env, capture_output=True,
                                       text=True)
                raise RuntimeError(f"Slurm nodes not idle after {seconds:g} s:\n{sinfo.stdout}"
                                   f"{sinfo.stderr}{self._tail(self.dir / 'slurmctld.log')}")
            time.sleep(0.2)

    def stop(self) -> None:
        if len(self.procs) > 2 and all(proc.poll() is None for proc in self.procs):
            self._cancel_jobs()
        for proc in reversed(self.procs):  # slurmds, then the controller, then munged
            stop_process(proc)
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _cancel_jobs(self, seconds: float = 15.0) -> None:
        """A job still running (a test failed or timed out) is cancelled, so that its
        steps' processes (a Dask scheduler, workers) end with it, not outlive the test."""
        subprocess.run(["scancel", "--full", "--user", getpass.getuser()], env=self.env,
                       capture_output=True, timeout=10)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and subprocess.run(
                ["squeue", "-h", "-o", "%i"], env=self.env, capture_output=True,
                text=True).stdout.strip():
            time.sleep(0.2)

    def __enter__(self) -> SlurmCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
