"""A database server that is down or silent is a fast 503, never a hang or a 500."""

import os
import socket
import subprocess
import sys

import orjson
import pytest
from django.conf import settings

PROBE = """
import os, time, orjson, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "data_project.settings")
django.setup()
from django.test import Client
client = Client(HTTP_HOST="localhost")
started = time.monotonic()
response = client.get("/api/run-query/?type=get&user_id=1")
print(orjson.dumps({"status": response.status_code, "seconds": time.monotonic() - started,
                    "retry_after": response.get("Retry-After"),
                    "body": orjson.loads(response.content)}).decode())
"""


def lookup_against(url: str, timeout_s: int = 2, pool: str = "0") -> dict:
    """Run one lookup in a fresh process whose ``users`` alias points at ``url``
    (``pool``: ``DATABASE_POOL``, persistent connections or Django's pool)."""
    env = {
        **os.environ,
        "DATABASE_URL_USERS": url,
        "DATABASE_CONNECT_TIMEOUT_SECONDS": str(timeout_s),
        "DATABASE_POOL": pool,
    }
    run = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return orjson.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers (a hung database host)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("pool", ["0", "1"], ids=["persistent", "pool"])
def test_a_refused_server_is_a_fast_503(pool):
    """Nothing listening: a 503 with Retry-After within the connect timeout."""
    url = f"postgres://app@127.0.0.1:{closed_port()}/users"
    result = lookup_against(url, timeout_s=2, pool=pool)
    assert result["status"] == 503 and result["retry_after"]
    assert result["body"]["details"] == {"store": "users", "failure": "unreachable"}
    assert "127.0.0.1" not in orjson.dumps(result["body"]).decode()  # hosts go to the log
    assert result["seconds"] < 4


@pytest.mark.parametrize("pool", ["0", "1"], ids=["persistent", "pool"])
def test_a_silent_server_times_out_into_a_503(silent_server, pool):
    """``connect_timeout`` bounds the wait: a hung host costs seconds, not a worker forever."""
    url = f"postgres://app@127.0.0.1:{silent_server}/users"
    result = lookup_against(url, timeout_s=2, pool=pool)
    assert result["status"] == 503
    assert result["seconds"] < 6
