"""The lookup fast path: ``GET /api/run-query/?type=get`` answered ahead of Django's cycle.

`FastPathHandler` is the WSGI application of `data_project.wsgi`: Django's
`WSGIHandler`, which answers a lookup of an allowed host itself, with the body
`api.http.lookups.lookup_response_body` gives DRF's view, the headers DRF and Django's
middleware would add, and errors as `api.http.errors.exception_handler` answers them.
Everything else, and any query Django reads differently, goes to Django untouched.

What must stay true: the same answer as Django's path byte for byte but ``elapsed_ms``
(``api/tests/test_fastpath.py``, for every lookup key); the same decisions (settings it
cannot honour are system-check errors, `checks`); the same request signals or Django's
connection housekeeping; the Django internals it mirrors pinned by
``api/tests/test_fastpath_internals.py``. Why each shortcut exists and what it saved:
``docs/performance.md``.
"""

from api.fastpath.handler import FastPathHandler

__all__ = ["FastPathHandler"]
