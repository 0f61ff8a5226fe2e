"""Logging that bad requests cannot flood: settings.LOGGING's filter and formatter.

A bad request is the client's fault, not a bug: Django logs a ``Host`` header not in
``ALLOWED_HOSTS`` or a query of too many fields (its ``SuspiciousOperation``\\s, on the
``django.security.*`` loggers) at ERROR with the whole traceback, and every 4xx answer on
``django.request``; a client sending them in a loop would write the log full.
`OncePerInterval` lets through one line per logger and status per interval (the next
says how many were left out) and `OneLineForBadRequests` writes a suspicious operation
on one line, without its traceback. Everything else is logged as it comes, tracebacks
included: a 5xx is a bug.
"""

import logging
import threading
import time

BAD_REQUEST_LOGGERS = "django.security."
REQUEST_LOGGER = "django.request"


def is_bad_request(record: logging.LogRecord) -> bool:
    """Whether ``record`` is about a client's bad request: a suspicious operation, or a
    4xx answer (``django.request`` below ERROR)."""
    return record.name.startswith(BAD_REQUEST_LOGGERS) or (
        record.name == REQUEST_LOGGER and record.levelno < logging.ERROR
    )


class OncePerInterval(logging.Filter):
    """One record per logger and status code every ``interval_s`` seconds, among those of
    bad requests (`is_bad_request`); the first after a quiet interval carries
    ``left_out``, how many were dropped since the last one. Others pass."""

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[tuple, tuple[float, int]] = {}  # key -> (logged at, left out)
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not is_bad_request(record):
            return True
        key = (record.name, getattr(record, "status_code", None))
        now = time.monotonic()
        with self._lock:
            logged_at, left_out = self._last.get(key, (None, 0))
            if logged_at is not None and now - logged_at < self.interval_s:
                self._last[key] = (logged_at, left_out + 1)
                return False
            self._last[key] = (now, 0)
        record.left_out = left_out
        return True


class OneLineForBadRequests(logging.Formatter):
    """The format given; a bad request's record on one line, without its traceback, and
    with how many like it were left out (`OncePerInterval`)."""

    def format(self, record: logging.LogRecord) -> str:
        if not is_bad_request(record):
            return super().format(record)
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record).replace("\n", " ")
        left_out = getattr(record, "left_out", 0)
        return f"{line} ({left_out} more left out)" if left_out else line
