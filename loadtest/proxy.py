"""nginx in front of Gunicorn, from ``deploy/nginx.conf``, for the length of a block.

`nginx_proxy` fills the template's ``${listen}``, ``${servers}`` (one ``server`` line per
upstream: nginx balances round-robin and passes a request that meets a dead upstream to
the next) and ``${prefix}`` (a temporary folder for its pid and buffers), runs ``nginx``
in the foreground and stops it gracefully (SIGQUIT) when the block ends. The project
installs nginx with ``make nginx`` (Debian's package).
"""

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from string import Template

from django.conf import settings

from loadtest.processes import stop_gracefully

TEMPLATE = Path(settings.BASE_DIR) / "deploy" / "nginx.conf"


class ProxyError(RuntimeError):
    """nginx is missing, or did not start listening."""


@contextmanager
def nginx_proxy(
    listen: str, upstream: str | list[str], timeout: float = 20
) -> Iterator[subprocess.Popen]:
    """nginx listening on ``listen`` (``host:port``), passing requests to ``upstream``
    (``host:port``, or a list of them to balance between)."""
    upstreams = [upstream] if isinstance(upstream, str) else upstream
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise ProxyError("nginx not found: make nginx (apt-get install nginx)")
    with tempfile.TemporaryDirectory(prefix="nginx-") as prefix:
        # $http_host, $proxy_add_x_forwarded_for are nginx's own: safe_substitute keeps them.
        conf = Template(TEMPLATE.read_text()).safe_substitute(
            listen=listen,
            servers="\n        ".join(f"server {address};" for address in upstreams),
            prefix=prefix,
        )
        (Path(prefix) / "nginx.conf").write_text(conf)
        # Its own session, as the servers' (runner.OWN_SESSION): Ctrl-C stops it through us.
        process = subprocess.Popen(
            [binary, "-p", prefix, "-c", f"{prefix}/nginx.conf"], start_new_session=True
        )
        try:
            _wait_listening(listen, process, timeout)
            yield process
        finally:
            stop_gracefully(process, signal.SIGQUIT, timeout=20)


def _wait_listening(listen: str, process: subprocess.Popen, timeout: float) -> None:
    host, port = listen.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ProxyError(f"nginx exited with status {process.returncode}")
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise ProxyError(f"nginx not listening on {listen} after {timeout:.0f} s")
