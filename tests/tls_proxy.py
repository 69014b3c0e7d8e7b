"""nginx from Debian as a TLS proxy (HTTP/2 and HTTP/1.1 on one port, chosen by ALPN) in
front of one embedding node, as fleets put Ollama behind a proxy for ``https://``. Used by
the security tests and the HTTP/2 benchmark.

    with TlsProxy("http://127.0.0.1:11434", log_protocols=True) as proxy:
        proxy.url, proxy.ca        # https://127.0.0.1:PORT, the self-signed cert to trust
        proxy.requests()           # [("HTTP/1.1", "-", 200, "/api/embed"), ...]
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from sollol_dask.testing._processes import stop_process, wait_for_port

_CONF = """\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format protocols '$server_protocol $ssl_alpn_protocol $status $uri';
    {access_log}
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # an embedding request or answer is kept in memory, never spooled to disk
    client_max_body_size 64m;
    client_body_buffer_size 16m;
    proxy_buffer_size 64k;
    proxy_buffers 64 64k;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream node {{ server {upstream}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        ssl_protocols TLSv1.3;
        location / {{
            proxy_pass http://node;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {upstream};
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TlsProxy:
    def __init__(self, upstream_url: str, log_protocols: bool = False) -> None:
        """``log_protocols``: log each request's HTTP version, ALPN protocol, status and
        path (never a header) for :meth:`requests`; off in benchmarks (it costs time)."""
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists():
            raise RuntimeError("nginx is missing: apt-get install nginx (make nginx)")
        self.dir = Path(tempfile.mkdtemp(prefix="sollol-nginx-"))
        self.ca = str(self.dir / "cert.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-keyout", str(self.dir / "key.pem"), "-out", self.ca, "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        self.port = _free_port()
        upstream = upstream_url.split("://", 1)[1].rstrip("/")
        conf = self.dir / "nginx.conf"
        self.log = self.dir / "access.log"
        access_log = f"access_log {self.log} protocols;" if log_protocols else "access_log off;"
        conf.write_text(_CONF.format(dir=self.dir, port=self.port, upstream=upstream,
                                     access_log=access_log))
        self.proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.url = f"https://127.0.0.1:{self.port}"
        wait_for_port(self.proc, self.port, "nginx", lambda: self.proc.stderr.read(), self.stop)

    def requests(self) -> list[tuple[str, str, int, str]]:
        """``(HTTP version, ALPN protocol or "-", status, path)`` of each request so far
        (nginx writes a line as each request ends)."""
        if not self.log.exists():
            return []
        rows = []
        for line in self.log.read_text().splitlines():
            version, alpn, status, path = line.split(" ", 3)
            rows.append((version, alpn, int(status), path))
        return rows

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> TlsProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
