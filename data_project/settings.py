"""Settings for data_project, driven entirely by the environment (`data_project.env`).

Production differs from a laptop only by environment variables: ``DJANGO_ENV=production``
turns on the HTTPS hardening and makes ``DJANGO_SECRET_KEY`` mandatory. Every store's
database alias is an SQLite file under ``DATA_DIR`` unless ``DATABASE_URL_<ALIAS>`` points
it at a server. Sections: core, databases, serving, access, cache, static files, DRF and
the schema, security, logging. Durations end in ``_SECONDS``.
"""

import warnings
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from api.db.pool_waiters import regrow_for_waiters
from api.domain.stores import STORE_NAMES
from data_project.env import Env

BASE_DIR = Path(__file__).resolve().parent.parent
env = Env()

# ------------------------------------------------------------------------------
# Core
# https://docs.djangoproject.com/en/5.2/ref/settings/#core-settings
# ------------------------------------------------------------------------------
DJANGO_ENV = env.str("DJANGO_ENV", default="development").lower()
if DJANGO_ENV not in {"development", "production"}:
    raise ImproperlyConfigured("DJANGO_ENV must be 'development' or 'production'.")
PRODUCTION = DJANGO_ENV == "production"

DEBUG = env.bool("DJANGO_DEBUG", default=False)

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is required when DJANGO_ENV=production.")
    # Prefixed so that `check --deploy` flags it if it ever reaches a server.
    SECRET_KEY = "django-insecure-local-only-set-DJANGO_SECRET_KEY-in-production"

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, pinned and served from here (offline)
    "api",
    "loadtest",  # manage.py loadtest and its report; the service never imports it
]

MIDDLEWARE = [
    "api.http.middleware.primary_pinning_middleware",
    "api.http.middleware.RouteLabelMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "data_project.urls"
WSGI_APPLICATION = "data_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ------------------------------------------------------------------------------
# Databases: one alias per store (api.domain.stores), routed by api.db.routers
# https://docs.djangoproject.com/en/5.2/topics/db/multi-db/
# https://docs.djangoproject.com/en/5.2/ref/databases/#sqlite-notes
# ------------------------------------------------------------------------------
DATA_DIR = Path(env.str("DATA_DIR", default="") or BASE_DIR / "var" / "db")
if not DATA_DIR.is_absolute():
    DATA_DIR = BASE_DIR / DATA_DIR

DATABASE_ALIASES = ("default", *STORE_NAMES)

SQLITE_BUSY_TIMEOUT_SECONDS = env.float("SQLITE_BUSY_TIMEOUT_SECONDS", default=20.0)
# WAL + NORMAL: a commit is durable once the WAL is synced (at checkpoints), so a power
# loss or OS crash can lose the last acknowledged transactions, never the file; a process
# crash loses nothing. FULL syncs the WAL on every commit: every acknowledged row survives.
# https://www.sqlite.org/pragma.html#pragma_synchronous
SQLITE_SYNCHRONOUS = env.str("SQLITE_SYNCHRONOUS", default="NORMAL").upper()
if SQLITE_SYNCHRONOUS not in {"NORMAL", "FULL"}:
    raise ImproperlyConfigured("SQLITE_SYNCHRONOUS must be NORMAL or FULL.")
# Bytes of each database file SQLite reads through a memory map instead of one read()
# system call per page its own cache lacks (0: off; SQLite caps it at 2 GiB). The map
# holds no memory of its own: its pages are the OS page cache's, shared by every worker
# (though counted in each one's RSS). https://www.sqlite.org/mmap.html
SQLITE_MMAP_BYTES = env.int("SQLITE_MMAP_BYTES", default=1 << 30)
if SQLITE_MMAP_BYTES < 0:
    raise ImproperlyConfigured("SQLITE_MMAP_BYTES must be 0 (off) or a number of bytes.")


def sqlite_database(alias: str) -> dict:
    """The embedded default for ``alias``: ``DATA_DIR/<alias>.sqlite3`` tuned for writers.

    IMMEDIATE transactions take the write lock at BEGIN, so concurrent writers queue on
    the busy timeout instead of failing with "database is locked" on lock upgrade.
    """
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / f"{alias}.sqlite3",
        # None: each thread keeps its connection for its whole life, so a request skips
        # connect + PRAGMAs, the largest fixed cost of a point lookup.
        "CONN_MAX_AGE": None,
        # A file has no server to lose: Django's SQLite is_usable() is always true.
        "CONN_HEALTH_CHECKS": False,
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
            "init_command": (
                f"PRAGMA journal_mode=WAL; PRAGMA synchronous={SQLITE_SYNCHRONOUS}; "
                f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}"
            ),
            # Django's default asks sqlite3 to convert "datetime" and "bool" columns by
            # their declared type, for every statement, in Python; the ORM's own converters
            # give the same values (docs/performance.md). Raw cursors get SQLite's own.
            "detect_types": 0,
        },
        # File-backed test databases: threads cannot share an in-memory database.
        "TEST": {"NAME": str(DATA_DIR / f"test_{alias}.sqlite3")},
    }


# Servers: a dead host must fail fast (a 503), not hang a worker thread. 2 s is libpq's
# smallest; the store's breaker (api.db.breakers) then refuses its next requests at once.
DATABASE_CONNECT_TIMEOUT_SECONDS = env.int("DATABASE_CONNECT_TIMEOUT_SECONDS", default=2)
# Persistent connections by default: each thread keeps one per alias it uses, which the
# fast path reuses without a round trip. Django's native psycopg pool (DATABASE_POOL=1,
# https://docs.djangoproject.com/en/5.2/ref/databases/#connection-pool) bounds a process
# below its thread count instead, at a checkout per request (docs/performance.md).
DATABASE_POOL = env.bool("DATABASE_POOL", default=False)
DATABASE_POOL_OPTIONS = {
    "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=2),
    "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=8),
    # Seconds a request waits for a pooled connection; while the server is unreachable the
    # pool keeps retrying for this long, so it bounds a dead server's 503 too.
    "timeout": env.float("DATABASE_POOL_TIMEOUT", default=float(DATABASE_CONNECT_TIMEOUT_SECONDS)),
    # How long the pool retries a connection it lost before giving it up (psycopg_pool's
    # reconnect_timeout, 5 min by default). Its retries back off 1, 2, 4, ... s, so after
    # an outage the next one could come as long after the server's return as the outage
    # lasted; a connection given up is made anew at once when a request waits for one.
    "reconnect_timeout": env.float("DATABASE_POOL_RECONNECT_SECONDS", default=2.0),
    # ... including the requests already waiting when the attempt was given up.
    "reconnect_failed": regrow_for_waiters,
}
# psycopg prepares a server-bound statement after this many runs on a connection (only
# the fast path binds server-side); "none" turns it off (PgBouncer in transaction mode).
_prepare_threshold = env.str("DATABASE_PREPARE_THRESHOLD", default="5")
DATABASE_PREPARE_THRESHOLD = (
    None
    if _prepare_threshold.lower() == "none"
    else env.int("DATABASE_PREPARE_THRESHOLD", default=5)
)


def server_database(url: str) -> dict:
    """A server alias from a URL (dj-database-url), with connect timeout and optional pool."""
    config = dj_database_url.parse(
        url, conn_max_age=0 if DATABASE_POOL else None, conn_health_checks=True
    )
    if config["ENGINE"] == "django.db.backends.postgresql":
        config["OPTIONS"] = {
            "connect_timeout": DATABASE_CONNECT_TIMEOUT_SECONDS,
            "prepare_threshold": DATABASE_PREPARE_THRESHOLD,
            **config.get("OPTIONS", {}),
        }
        if DATABASE_POOL:
            config["OPTIONS"]["pool"] = DATABASE_POOL_OPTIONS
    return config


DATABASES = {
    alias: (
        server_database(env.str(f"DATABASE_URL_{alias.upper()}"))
        if env.str(f"DATABASE_URL_{alias.upper()}", default="")
        else sqlite_database(alias)
    )
    for alias in DATABASE_ALIASES
}
for _alias in STORE_NAMES:
    # Stores never depend on default, so a test may create any subset of them.
    DATABASES[_alias].setdefault("TEST", {})["DEPENDENCIES"] = []

# Read replicas: DATABASE_REPLICA_URLS_USERS=url1,url2 adds aliases users_replica1, ...
# In tests each mirrors its primary (the same test database).
DATABASE_REPLICAS: dict[str, list[str]] = {}
for _alias in STORE_NAMES:
    for _number, _url in enumerate(
        env.list(f"DATABASE_REPLICA_URLS_{_alias.upper()}", default=[]), 1
    ):
        _replica = f"{_alias}_replica{_number}"
        DATABASES[_replica] = {**server_database(_url), "TEST": {"MIRROR": _alias}}
        DATABASE_REPLICAS.setdefault(_alias, []).append(_replica)

DATABASE_ROUTERS = ["api.db.routers.DatabaseRouter"]
# Read-your-writes across requests (api.http.pinning): how long after a write a client's
# reads of that alias go to the primary (django-multidb-router's default).
REPLICA_PINNING_SECONDS = env.float("REPLICA_PINNING_SECONDS", default=15.0)
# Replicas leave the rotation while down or lagging past REPLICA_MAX_LAG_SECONDS, checked
# every REPLICA_CHECK_SECONDS by one thread per process (api.db.replicas; 0: off).
REPLICA_CHECK_SECONDS = env.float("REPLICA_CHECK_SECONDS", default=2.0)
REPLICA_MAX_LAG_SECONDS = env.float("REPLICA_MAX_LAG_SECONDS", default=5.0)

# ------------------------------------------------------------------------------
# Serving: the lookup fast path, bulkheads and breakers, /api/stats/
# ------------------------------------------------------------------------------
# GET /api/run-query/ lookups and POST type=insert batches answered ahead of Django's
# request cycle, with the same signals, host check, policies, body and headers
# (api.fastpath); 0 sends them through it.
LOOKUP_FAST_PATH = env.bool("LOOKUP_FAST_PATH", default=True)
INSERT_FAST_PATH = env.bool("INSERT_FAST_PATH", default=True)
# How long a request waits for a store's lock before its records fail (503), how long a
# store that failed so is refused at once (api.db.breakers), how many insert batches may
# queue for one store (api.db.bulkheads). Commands keep SQLITE_BUSY_TIMEOUT_SECONDS.
REQUEST_DEADLINE_SECONDS = env.float("REQUEST_DEADLINE_SECONDS", default=2.0)
# How long one statement of a server process's PostgreSQL store or replica connection may
# run (statement_timeout; api.db.deadlines): a locked store fails its own lookups (503)
# instead of holding every worker. 0: unbounded. Commands are never bounded.
READ_DEADLINE_SECONDS = env.float("READ_DEADLINE_SECONDS", default=1.0)
STORE_COOLDOWN_SECONDS = env.float("STORE_COOLDOWN_SECONDS", default=2.0)
INSERT_QUEUE_LIMIT = env.int("INSERT_QUEUE_LIMIT", default=64)
# Seconds /api/stats/ may be old: it counts rows and searches id gaps over whole indexes.
STATS_CACHE_SECONDS = env.float("STATS_CACHE_SECONDS", default=10.0)
# Prometheus metrics (api.metrics): requests and queries timed, GET /metrics answered
# (with the ``metrics`` token scope when tokens are required). 0: neither.
METRICS = env.bool("METRICS", default=True)

# Set by manage.py loadtest on the server it starts: sent back on every response
# (data_project.run_id), so the run can tell its server from one that took its port.
LOADTEST_RUN_ID = env.str("LOADTEST_RUN_ID", default="")

# ------------------------------------------------------------------------------
# Access (api.http.access, throttling, idempotency): tokens, scopes, rates, keys
# https://www.django-rest-framework.org/api-guide/authentication/#tokenauthentication
# ------------------------------------------------------------------------------
# Whether every write and every read of personal data (users, orders) needs a token.
# Without it (development) an anonymous client may do everything a token may.
API_TOKENS_REQUIRED = env.bool("API_TOKENS_REQUIRED", default=PRODUCTION)
# How long a worker trusts what it read about a token: a revoked token, or one whose
# scopes changed, is answered as before for at most this long.
TOKEN_CACHE_SECONDS = env.float("TOKEN_CACHE_SECONDS", default=5.0)
# Off in production unless turned on: the API's docs and schema (else a token is needed),
# the /run/ page (else 404), ``type=insert&count=N`` synthetic inserts (else 403).
API_DOCS_PUBLIC = env.bool("API_DOCS_PUBLIC", default=not PRODUCTION)
RUN_PAGE_ENABLED = env.bool("RUN_PAGE_ENABLED", default=not PRODUCTION)
SYNTHETIC_INSERTS_ENABLED = env.bool("SYNTHETIC_INSERTS_ENABLED", default=not PRODUCTION)
# Requests per period by client tier and throttle scope (api.http.throttling). Anonymous
# clients are one tier per address; a token's tier is its user's ``tier:<name>`` group
# (``manage.py create_token --tier``), else ``standard``. None: not throttled.
# THROTTLE_RATE_<TIER>_<SCOPE> overrides one ("none": not throttled).
THROTTLE_RATES: dict[str, dict[str, str | None]] = {
    "anonymous": {
        "lookup": "1200/min" if PRODUCTION else None,
        "insert": "30/min" if PRODUCTION else None,
        "create": "120/min" if PRODUCTION else None,
    },
    "standard": {"lookup": "60000/min", "insert": "600/min", "create": "6000/min"},
    # The load generator's token: a rate the benchmark never reaches.
    "benchmark": {"lookup": "100000000/h", "insert": "10000000/h", "create": "10000000/h"},
}
for _tier, _rates in THROTTLE_RATES.items():
    for _scope in _rates:
        _override = env.str(f"THROTTLE_RATE_{_tier.upper()}_{_scope.upper()}", default="")
        if _override:
            _rates[_scope] = None if _override.lower() == "none" else _override
# Idempotency-Key on POSTs that insert: how long a key's response is kept, whether a POST
# without one is refused (400), how long a request whose key is still running elsewhere
# waits for its response before a 409, and when a running key counts as abandoned (its
# worker was killed): far beyond any request (Gunicorn's timeout is 30 s).
IDEMPOTENCY_KEY_SECONDS = env.int("IDEMPOTENCY_KEY_SECONDS", default=24 * 3600)
IDEMPOTENCY_KEY_REQUIRED = env.bool("IDEMPOTENCY_KEY_REQUIRED", default=False)
IDEMPOTENCY_WAIT_SECONDS = env.float(
    "IDEMPOTENCY_WAIT_SECONDS", default=REQUEST_DEADLINE_SECONDS + 1
)
IDEMPOTENCY_ABANDONED_SECONDS = env.float("IDEMPOTENCY_ABANDONED_SECONDS", default=300.0)

# ------------------------------------------------------------------------------
# Cache: shared by every worker and host (throttle counters, /api/stats/)
# https://docs.djangoproject.com/en/5.2/topics/cache/
# ------------------------------------------------------------------------------
# Redis when REDIS_URL is set; otherwise a table in the default database
# (``manage.py migrate_all`` creates it). Never a per-process cache: each of N workers
# would allow a client N times its rate.
REDIS_URL = env.str("REDIS_URL", default="")
CACHE_TIMEOUT_SECONDS = env.float("CACHE_TIMEOUT_SECONDS", default=0.5)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # A dead Redis must cost a bounded wait, not a hung worker (the throttle then
            # lets requests through and logs it).
            "OPTIONS": {
                "socket_connect_timeout": CACHE_TIMEOUT_SECONDS,
                "socket_timeout": CACHE_TIMEOUT_SECONDS,
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "api_cache",
        }
    }

# ------------------------------------------------------------------------------
# Static files (Swagger UI, the pages' CSS): served by Gunicorn itself through WhiteNoise,
# DEBUG or not. https://whitenoise.readthedocs.io/en/stable/django.html
# ------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default="") or BASE_DIR / "var" / "static")
# ``manage.py collectstatic`` (make serve) copies them to STATIC_ROOT with gzip and Brotli
# copies beside each. Until it has run, WhiteNoise serves them from the apps (its
# finders, uncompressed), so a fresh clone, the suite and `make demo` need no build step.
# No manifest (hashed names): a template never fails for a file not collected yet.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = not STATIC_ROOT.is_dir()
warnings.filterwarnings("ignore", message="No directory at: ", category=UserWarning)
# Files served at the site's root: /favicon.ico, which browsers ask for on every page.
WHITENOISE_ROOT = BASE_DIR / "data_project" / "root"

# ------------------------------------------------------------------------------
# Django REST framework and the OpenAPI schema
# https://www.django-rest-framework.org/api-guide/settings/
# https://drf-spectacular.readthedocs.io/en/latest/settings.html
# ------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["api.http.renderers.ORJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["api.http.parsers.ORJSONParser"],
    "EXCEPTION_HANDLER": "api.http.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "api.http.schema.AutoSchema",
    "COERCE_DECIMAL_TO_STRING": True,
    # Every API view's policies: a token when sent, the scopes a request needs, a rate
    # per tier and throttle scope. Views without personal data or writes need none.
    "DEFAULT_AUTHENTICATION_CLASSES": ["api.http.access.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["api.http.access.ScopedAccess"],
    "DEFAULT_THROTTLE_CLASSES": ["api.http.throttling.TierRateThrottle"],
    # Proxies in front of Gunicorn that append to X-Forwarded-For (nginx: 1). 0 throttles
    # anonymous clients by the connection's address, which no client can forge.
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
}
# The proxies whose X-Forwarded-For the throttles read (api.http.throttling), as the
# servers trust X-Forwarded-Proto from them: another client's X-Forwarded-For is ignored.
FORWARDED_ALLOW_IPS = env.trusted_proxies()
SPECTACULAR_SETTINGS = {
    "TITLE": "data_project API",
    "DESCRIPTION": "Users, products and orders in three routed databases: indexed lookups "
    "and concurrent, validated inserts.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["api.http.access.DocsAccess"],
    # Swagger UI from drf-spectacular-sidecar (its version pinned in requirements.txt),
    # not a CDN: the docs render offline and never change under us.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "OrderStatusEnum": "api.models.Order.Status",
        "RecordStatusEnum": "api.domain.results.STATUSES",
    },
}

# ------------------------------------------------------------------------------
# Security: on by DJANGO_ENV=production, each switch overridable
# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
# ------------------------------------------------------------------------------
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=PRODUCTION)
# Load balancers probe health over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^api/health/$"]
# Not read by Django: the server sets ``wsgi.url_scheme`` to https from X-Forwarded-Proto
# only when the connection comes from a proxy in FORWARDED_ALLOW_IPS (gunicorn.conf.py's
# forwarded_allow_ips, data_project/granian_server.py), and nginx sets that header itself
# (deploy/nginx.conf). Read here, any client reaching the server directly could claim HTTPS.
# https://docs.djangoproject.com/en/5.2/ref/settings/#secure-proxy-ssl-header
SECURE_PROXY_SSL_HEADER = None
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool(
    "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=PRODUCTION
)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=PRODUCTION)
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
X_FRAME_OPTIONS = "DENY"

# ------------------------------------------------------------------------------
# Logging: everything to stderr, where Gunicorn and the service manager collect it
# https://docs.djangoproject.com/en/5.2/topics/logging/
# ------------------------------------------------------------------------------
# A bad request (a Host not allowed, too many fields, any 4xx) is one line, at most one per
# logger and status every LOG_BAD_REQUEST_SECONDS: a client cannot flood the log
# (data_project/logs.py). A 5xx is logged every time, with its traceback.
LOG_BAD_REQUEST_SECONDS = env.float("LOG_BAD_REQUEST_SECONDS", default=60.0)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "bad_requests": {
            "()": "data_project.logs.OncePerInterval",
            "interval_s": LOG_BAD_REQUEST_SECONDS,
        }
    },
    "formatters": {
        "plain": {
            "()": "data_project.logs.OneLineForBadRequests",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["bad_requests"],
        }
    },
    "root": {"handlers": ["stderr"], "level": env.str("DJANGO_LOG_LEVEL", default="WARNING")},
}
