"""The environment as settings.py and gunicorn.conf.py read it: django-environ's `Env`.

Two rules of this project on top of it. A blank value means unset (``make`` exports an
unset variable as ""), and a value that does not parse is `ImproperlyConfigured` naming its
variable. A value is taken as it is: no ``$OTHER`` expansion, which a secret key may
contain. Variables renamed since they were documented (`RENAMED`) are still read, with a
`FutureWarning` naming the new name.
"""

import os
import warnings

import environ
from django.core.exceptions import ImproperlyConfigured

# Old name -> new name: one unit suffix (``_SECONDS``) for every duration.
RENAMED = {
    "SQLITE_BUSY_TIMEOUT": "SQLITE_BUSY_TIMEOUT_SECONDS",
    "DATABASE_CONNECT_TIMEOUT": "DATABASE_CONNECT_TIMEOUT_SECONDS",
    "CACHE_TIMEOUT": "CACHE_TIMEOUT_SECONDS",
}


class Env(environ.Env):
    """`environ.Env` over a snapshot of the environment, blank values dropped."""

    def __init__(self, environ_: dict[str, str] | None = None, **scheme):
        super().__init__(**scheme)
        source = os.environ if environ_ is None else environ_
        self.ENVIRON = {name: value.strip() for name, value in source.items() if value.strip()}
        for old, new in RENAMED.items():
            if old in self.ENVIRON:
                warnings.warn(f"{old} is deprecated: set {new}", FutureWarning, stacklevel=2)
                self.ENVIRON.setdefault(new, self.ENVIRON[old])

    def get_value(self, var, cast=None, default=environ.Env.NOTSET, parse_default=False):
        """The value of ``var`` cast by ``cast``, or ``default`` when it is unset or blank.

        Raises `ImproperlyConfigured` naming ``var`` when it is unset without a default or
        its value does not parse.
        """
        value = self.ENVIRON.get(var)
        if value is None:
            if default is self.NOTSET:
                raise ImproperlyConfigured(f"Set the {var} environment variable.")
            if not (parse_default and isinstance(default, str)):
                return default
            value = default
        try:
            return self.parse_value(value, cast) if cast is not None else value
        except ValueError:
            kind = getattr(cast, "__name__", "value")
            article = "an" if kind[0] in "aeiou" else "a"
            raise ImproperlyConfigured(f"{var} must be {article} {kind}, not {value!r}.") from None

    def list(self, var, cast=None, default=environ.Env.NOTSET):
        """Comma-separated items, each stripped of spaces, blank ones dropped."""
        items = super().list(var, cast=cast or str.strip, default=default)
        return [item for item in items if item != ""]

    def trusted_proxies(self) -> tuple[str, ...]:
        """``FORWARDED_ALLOW_IPS``: the addresses or networks (``10.0.0.0/8``) of the
        proxies whose ``X-Forwarded-Proto`` and ``X-Forwarded-For`` the servers and the
        throttles believe. Default: loopback when ``NUM_PROXIES`` says a proxy is in front
        (nginx on the same host), else none: a client served directly forwards nothing.
        """
        default = ["127.0.0.1", "::1"] if self.int("NUM_PROXIES", default=0) else []
        return tuple(self.list("FORWARDED_ALLOW_IPS", default=default))
