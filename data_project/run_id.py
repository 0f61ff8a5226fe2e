"""The run id a load test gives the server it starts, sent back on every response.

``manage.py loadtest`` starts its server with ``LOADTEST_RUN_ID`` set to an id of its own
and, before the swarm starts, checks that whatever answers on its address sends that id
back in ``X-Loadtest-Run``: a port taken by another server after the run checked it (a
``make serve`` started while the data was generated, say) is then found before anything is
measured. Without the variable (every other server) `RunIdHeader` is not installed at all.
"""

from collections.abc import Callable, Iterable

RUN_ID_VARIABLE = "LOADTEST_RUN_ID"
RUN_ID_HEADER = "X-Loadtest-Run"


class RunIdHeader:
    """WSGI middleware: add ``X-Loadtest-Run: <run_id>`` to every response of ``app``."""

    def __init__(self, app: Callable, run_id: str):
        self.app = app
        self.header = (RUN_ID_HEADER, run_id)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        def start(status: str, headers: list, exc_info=None):
            return start_response(status, [*headers, self.header], exc_info)

        return self.app(environ, start)
