"""Request bodies sent with ``Transfer-Encoding: chunked``, which Django alone reads as empty.

Django reads ``CONTENT_LENGTH`` bytes of a request's body and takes a request without
that header for one without a body (``WSGIRequest``; so does DRF's ``Request``). A
chunked body has no length in advance, so it reached the views as empty: an insert batch
sent chunked was a 400 "give a JSON body". Gunicorn and Granian decode the chunks and end
``wsgi.input`` at the body's end, which they announce with ``wsgi.input_terminated``
(Werkzeug's convention, which Flask reads). `ChunkedBodies` reads such a body whole, up to
one byte past Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (so that a longer one is the usual
JSON 413), and hands it on with its ``CONTENT_LENGTH``. A server that does not end the
input (``runserver``, wsgiref) leaves the length unknowable: a 411 with the error envelope,
never a silently empty body.
"""

import io
from collections.abc import Callable, Iterable

import orjson

from api.http.errors import envelope

LENGTH_REQUIRED = "a chunked request body needs a server that ends it; send Content-Length"


class ChunkedBodies:
    """WSGI middleware: pass a chunked request body on with its ``CONTENT_LENGTH``.

    ``limit_bytes``: at most this many bytes plus one are read (None: the whole body).
    """

    def __init__(self, app: Callable, limit_bytes: int | None):
        self.app = app
        self.limit_bytes = limit_bytes

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """Serve ``environ`` with ``app``; a chunked body is read first (see the module)."""
        # One dict lookup on every request; the rest only for a chunked body.
        if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return self.app(environ, start_response)
        if not environ.get("wsgi.input_terminated"):
            body = orjson.dumps(envelope(LENGTH_REQUIRED))
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            start_response("411 Length Required", headers)
            return [body]
        body = read_up_to(environ["wsgi.input"], self.limit_bytes)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


def read_up_to(stream, limit_bytes: int | None) -> bytes:
    """``stream``'s bytes until it ends or one byte past ``limit_bytes`` (None: no limit).

    A server's ``read(n)`` may return fewer than ``n`` bytes before the end, so this reads
    until it returns ``b""``.
    """
    chunks, size = [], 0
    while limit_bytes is None or size <= limit_bytes:
        want = -1 if limit_bytes is None else limit_bytes + 1 - size
        chunk = stream.read(want)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
