"""OpenSSH's sshd from Debian on 127.0.0.1, with a host key and a client key made for the test."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

from sollol_dask.testing._processes import wait_for_port

SSHD = Path("/usr/sbin/sshd")


class Sshd:
    def __init__(self, directory: Path) -> None:
        if not SSHD.exists() or shutil.which("ssh-keygen") is None:
            raise RuntimeError("sshd is missing: run `make sshd` (apt-get install openssh-server)")
        self.dir = directory
        self.key = directory / "client_key"
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(directory / name)], check=True)
        (directory / "authorized_keys").write_text((directory / "client_key.pub").read_text())
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.log = directory / "sshd.log"
        config = directory / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {directory}/host_key\n"
            f"AuthorizedKeysFile {directory}/authorized_keys\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
            f"PidFile {directory}/sshd.pid\n")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        self.proc = subprocess.Popen([str(SSHD), "-D", "-f", str(config), "-E", str(self.log)])
        wait_for_port(self.proc, self.port, "sshd", self.log.read_text, self.stop)

    def accepted(self) -> int:
        """How many SSH logins sshd accepted with the test's key."""
        return self.log.read_text().count("Accepted publickey")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

