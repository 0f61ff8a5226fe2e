"""The lookup hot path: ``GET /api/run-query/?type=get`` lookups, outside Django's cycle.

Entry point: `LookupFastPathHandler`, the WSGI application of `data_project.wsgi`. It is
Django's `WSGIHandler`; for a GET of ``/api/run-query/`` it first tries to answer itself.

**What it answers.** Every lookup of an allowed host: the body is
`api.views.run_query.lookup_response_body`, the same function DRF's view calls, on the
parameters `query_string.query_params` reads from the query string; the lookup's rows come
from the `compiled` queries of `api.selectors`, whose SQLite values are converted by
`sqlite_converters`. The headers are the ones DRF's view and Django's middleware put on the
same response (``Allow``, ``Content-Type``, security headers, ``Content-Length``). A lookup
that fails with an API error (400, 404, 405) or a database error (503 + ``Retry-After``)
is answered as `api.errors.exception_handler` answers it on DRF's path, and logged as
Django's handler logs it: the query runs once, and a dead server costs one timeout.

**What it hands to Django.** Everything else, with the untouched ``environ``: other paths
and methods, a host that is not allowed, a request ``SECURE_SSL_REDIRECT`` redirects, a
user agent to check against ``DISALLOWED_USER_AGENTS``, and a query string Django reads
differently (not UTF-8, too many fields). An exception the fast path does not expect is
logged (rate-limited) before Django answers.

**What must stay true.**

- The same answer as Django's path, byte for byte but ``elapsed_ms``: tested side by side
  for every key of `api.lookup_keys.LOOKUP_KEYS` (``api/tests/test_hotpath.py``).
- The same decisions: the middleware it does not reproduce, ``PREPEND_WWW`` and any DRF
  policy on the view it does not apply (authentication, permissions, throttles,
  versioning, content negotiation) are system-check errors (`checks`), raised when the
  handler is built, so a server never skips them silently.
- The same housekeeping: Django's ``request_started``/``request_finished`` signals are
  sent when anything but Django's own connection housekeeping listens (or ``DEBUG``);
  otherwise the handler runs that housekeeping itself on the aliases where it can act.
- The Django internals it relies on are pinned by ``api/tests/test_hotpath_internals.py``:
  an upgrade that changes one fails there, naming the code here to re-read.

Why each shortcut exists and what it saved: ``docs/performance.md``.
"""

__all__ = ["LookupFastPathHandler"]


def __getattr__(name: str):
    # Imported on first use: the handler imports the view, whose selectors import
    # `compiled` from this package.
    if name == "LookupFastPathHandler":
        from api.hotpath.handler import LookupFastPathHandler

        return LookupFastPathHandler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
