"""One ``PROMETHEUS_MULTIPROC_DIR`` per server instance, set before anything imports the app.

prometheus-client's multiprocess mode (`api.metrics`) needs the variable set before the
client is first imported, and a directory that holds no file of an earlier run, shared by
a server's workers and by no other server's (a cluster run starts two on one host). Both
launchers call `prepare` first: ``gunicorn.conf.py`` and `data_project.granian_server`.
A directory given in the variable is emptied of metric files and kept; otherwise a fresh
one is made under the system's temporary folder and removed when the server exits.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def prepare(enabled: bool) -> str | None:
    """Set up this server's metric directory; its path, or None when ``enabled`` is false
    (``METRICS=0``: the variable is removed, so workers keep nothing on disk)."""
    if not enabled:
        os.environ.pop(VARIABLE, None)
        return None
    given = os.environ.get(VARIABLE)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        return str(directory)
    made = tempfile.mkdtemp(prefix="data-project-metrics-")
    os.environ[VARIABLE] = made
    owner = os.getpid()
    # Only the process that made it removes it: forked workers run atexit handlers too
    # when they exit normally.
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(made, ignore_errors=True))
    return made
