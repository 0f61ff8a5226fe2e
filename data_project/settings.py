"""Settings for data_project, driven entirely by the environment.

Production differs from a laptop only by environment variables: ``DJANGO_ENV=production``
turns on the HTTPS hardening and makes ``DJANGO_SECRET_KEY`` mandatory. Every routed
database alias (``default``, ``users``, ``products``, ``orders``) is an SQLite file under
``DATA_DIR`` unless ``DATABASE_URL_<ALIAS>`` points it at a server.
"""

import os
import warnings
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    """Read a string; unset or blank (``make`` exports unset variables as "") means default."""
    value = os.environ.get(name, "").strip()
    return value or default


def env_number(name: str, default: float, kind: type = float):
    """Read an ``int`` or ``float`` (``kind``); unset or blank means ``default``.

    Raises ImproperlyConfigured naming the variable when the value does not parse.
    """
    value = env_str(name)
    if not value:
        return kind(default)
    try:
        return kind(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a {kind.__name__}, not {value!r}.") from None


def env_bool(name: str, default: bool = False) -> bool:
    """Read a boolean flag: ``1/true/yes/on`` (any case) are true, anything else false;
    unset or blank means ``default``."""
    value = env_str(name)
    if not value:
        return default
    return value.lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    """Read a comma-separated list, dropping blanks."""
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


# ------------------------------------------------------------------------------
# Core
# https://docs.djangoproject.com/en/5.2/ref/settings/#core-settings
# ------------------------------------------------------------------------------
DJANGO_ENV = env_str("DJANGO_ENV", "development").lower()
if DJANGO_ENV not in {"development", "production"}:
    raise ImproperlyConfigured("DJANGO_ENV must be 'development' or 'production'.")
PRODUCTION = DJANGO_ENV == "production"

DEBUG = env_bool("DJANGO_DEBUG", default=False)

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is required when DJANGO_ENV=production.")
    # Prefixed so that `check --deploy` flags it if it ever reaches a server.
    SECRET_KEY = "django-insecure-local-only-set-DJANGO_SECRET_KEY-in-production"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, pinned and served from here (offline)
    "api",
]

MIDDLEWARE = [
    "api.middleware.primary_pinning_middleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "data_project.urls"
WSGI_APPLICATION = "data_project.wsgi.application"
# Successful GET /api/run-query/ lookups answered ahead of Django's request cycle, with the
# same signals, host check, body and headers (api.hotpath); 0 sends them through it.
LOOKUP_FAST_PATH = env_bool("LOOKUP_FAST_PATH", default=True)
# Bulkheads (api.bulkheads): how long a request waits for a store's lock before its records
# fail (503), how long a store that failed so is refused at once, how many insert batches
# may queue for one store. Commands (insert_data, generate_data) keep SQLITE_BUSY_TIMEOUT.
REQUEST_DEADLINE_SECONDS = env_number("REQUEST_DEADLINE_SECONDS", 2, float)
STORE_COOLDOWN_SECONDS = env_number("STORE_COOLDOWN_SECONDS", 2, float)
INSERT_QUEUE_LIMIT = env_number("INSERT_QUEUE_LIMIT", 64, int)
# Seconds /api/stats/ may be old: it counts rows and searches id gaps over whole indexes.
STATS_CACHE_SECONDS = env_number("STATS_CACHE_SECONDS", 10, float)

# ------------------------------------------------------------------------------
# Access (api.access): tokens, scopes, throttles, idempotency keys
# https://www.django-rest-framework.org/api-guide/authentication/#tokenauthentication
# ------------------------------------------------------------------------------
# Whether every write and every read of personal data (users, orders) needs a token.
# Without it (development) an anonymous client may do everything a token may.
API_TOKENS_REQUIRED = env_bool("API_TOKENS_REQUIRED", default=PRODUCTION)
# How long a worker trusts what it read about a token: a revoked token, or one whose
# scopes changed, is answered as before for at most this long.
TOKEN_CACHE_SECONDS = env_number("TOKEN_CACHE_SECONDS", 5, float)
# Off in production unless turned on: the API's docs and schema (else a token is needed),
# the /run/ page (else 404), ``type=insert&count=N`` synthetic inserts (else 403).
API_DOCS_PUBLIC = env_bool("API_DOCS_PUBLIC", default=not PRODUCTION)
RUN_PAGE_ENABLED = env_bool("RUN_PAGE_ENABLED", default=not PRODUCTION)
SYNTHETIC_INSERTS_ENABLED = env_bool("SYNTHETIC_INSERTS_ENABLED", default=not PRODUCTION)
# Requests per period by client tier and kind of request (api.throttles). Anonymous
# clients are one tier per address; a token's tier is its user's ``tier:<name>`` group
# (``manage.py create_token --tier``), else ``standard``. None: not throttled.
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
    for _kind in _rates:
        _override = env_str(f"THROTTLE_RATE_{_tier.upper()}_{_kind.upper()}")
        if _override:
            _rates[_kind] = None if _override.lower() == "none" else _override
# Idempotency-Key on POSTs that insert (api.idempotency): how long a key's response is
# kept, whether a POST without one is refused (400), and how long a request with a key
# that is still running elsewhere waits for its response before it gets a 409.
IDEMPOTENCY_KEY_SECONDS = env_number("IDEMPOTENCY_KEY_SECONDS", 24 * 3600, int)
IDEMPOTENCY_KEY_REQUIRED = env_bool("IDEMPOTENCY_KEY_REQUIRED", default=False)
IDEMPOTENCY_WAIT_SECONDS = env_number(
    "IDEMPOTENCY_WAIT_SECONDS", REQUEST_DEADLINE_SECONDS + 1, float
)
# A key whose first request has run this long is taken as abandoned (its worker was
# killed) and claimed anew: far beyond any request (Gunicorn's timeout is 30 s).
IDEMPOTENCY_ABANDONED_SECONDS = env_number("IDEMPOTENCY_ABANDONED_SECONDS", 300, float)

# ------------------------------------------------------------------------------
# Cache: shared by every worker and host (throttle counters, /api/stats/)
# https://docs.djangoproject.com/en/5.2/topics/cache/
# ------------------------------------------------------------------------------
# Redis when REDIS_URL is set; otherwise a table in the default database
# (``manage.py migrate_all`` creates it). Never a per-process cache: each of N workers
# would allow a client N times its rate.
REDIS_URL = env_str("REDIS_URL")
CACHE_TIMEOUT_SECONDS = env_number("CACHE_TIMEOUT", 0.5, float)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # A dead Redis must cost a bounded wait, not a hung worker (api.throttles
            # then lets requests through and logs it).
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

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

# ------------------------------------------------------------------------------
# Static files (Swagger UI, the pages' CSS): served by Gunicorn itself through WhiteNoise,
# DEBUG or not. https://whitenoise.readthedocs.io/en/stable/django.html
# ------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT") or BASE_DIR / "var" / "static")
# ``manage.py collectstatic`` (make serve) copies them to STATIC_ROOT with gzip and Brotli
# copies beside each, which WhiteNoise then serves to clients that accept them. Until it has
# run, WhiteNoise serves them from the apps (its finders, uncompressed), so a fresh clone,
# the test suite and `make demo` need no build step. No manifest (hashed names): a template
# never fails for a file not collected yet.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = not STATIC_ROOT.is_dir()
# Until collectstatic has run there is no STATIC_ROOT, and the finders serve every file.
warnings.filterwarnings("ignore", message="No directory at: ", category=UserWarning)
# Files served at the site's root: /favicon.ico, which browsers ask for on every page.
WHITENOISE_ROOT = BASE_DIR / "data_project" / "root"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ------------------------------------------------------------------------------
# Databases: one alias per store, routed by api.routers.DatabaseRouter
# https://docs.djangoproject.com/en/5.2/topics/db/multi-db/
# https://docs.djangoproject.com/en/5.2/ref/databases/#sqlite-notes
# ------------------------------------------------------------------------------
DATA_DIR = Path(env_str("DATA_DIR") or BASE_DIR / "var" / "db")
if not DATA_DIR.is_absolute():
    DATA_DIR = BASE_DIR / DATA_DIR

ROUTED_ALIASES = ("users", "products", "orders")
DATABASE_ALIASES = ("default", *ROUTED_ALIASES)

# None keeps each thread's connection open for its whole life (Django's "persistent"):
# a request then skips connect + PRAGMAs, the largest fixed cost of a point lookup.
CONN_MAX_AGE = None
SQLITE_BUSY_TIMEOUT_S = env_number("SQLITE_BUSY_TIMEOUT", 20, float)
# WAL + NORMAL: a commit is durable once the WAL is synced (at checkpoints), so a power
# loss or OS crash can lose the last acknowledged transactions, never the file; a process
# crash loses nothing. FULL syncs the WAL on every commit: every acknowledged row survives.
# https://www.sqlite.org/pragma.html#pragma_synchronous
SQLITE_SYNCHRONOUS = env_str("SQLITE_SYNCHRONOUS", "NORMAL").upper()
if SQLITE_SYNCHRONOUS not in {"NORMAL", "FULL"}:
    raise ImproperlyConfigured("SQLITE_SYNCHRONOUS must be NORMAL or FULL.")


def sqlite_database(alias: str) -> dict:
    """The embedded default for ``alias``: ``DATA_DIR/<alias>.sqlite3`` tuned for writers.

    IMMEDIATE transactions take the write lock at BEGIN, so concurrent writers queue on
    the busy timeout instead of failing with "database is locked" on lock upgrade.
    """
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / f"{alias}.sqlite3",
        "CONN_MAX_AGE": CONN_MAX_AGE,
        # A file has no server to lose: Django's SQLite is_usable() is always true.
        "CONN_HEALTH_CHECKS": False,
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": SQLITE_BUSY_TIMEOUT_S,
            "init_command": f"PRAGMA journal_mode=WAL; PRAGMA synchronous={SQLITE_SYNCHRONOUS}",
            # Django's default asks sqlite3 to convert "datetime" and "bool" columns by their
            # declared type, for every statement, in Python (docs/performance.md). The
            # ORM's own converters, which also serve columns SQLite has
            # no type for (max(created_at)), turn the stored text and integers into the
            # same aware datetimes and bools. Raw cursors get SQLite's own values.
            "detect_types": 0,
        },
        # File-backed test databases: threads cannot share an in-memory database.
        "TEST": {"NAME": str(DATA_DIR / f"test_{alias}.sqlite3")},
    }


# Servers: a dead host must fail fast (a 503), not hang a worker thread.
# 2 s: libpq's smallest; a request that needs a dead server is a 503 about that fast, and
# the store's breaker (api.bulkheads) then refuses its next requests at once.
DATABASE_CONNECT_TIMEOUT_S = env_number("DATABASE_CONNECT_TIMEOUT", 2, int)
# Persistent connections by default: each thread keeps one per alias it uses (Gunicorn's
# threads and one insert thread per alias: (GUNICORN_THREADS + 1) x aliases per process),
# which the lookup fast path reuses without a round trip (api.hotpath.compiled). Django's
# native psycopg pool (DATABASE_POOL=1, https://docs.djangoproject.com/en/5.2/ref/
# databases/#connection-pool) bounds a process below its thread count instead, at a
# checkout and return per request (docs/performance.md); it replaces persistent
# connections, so CONN_MAX_AGE becomes 0.
DATABASE_POOL = env_bool("DATABASE_POOL", default=False)
DATABASE_POOL_OPTIONS = {
    "min_size": env_number("DATABASE_POOL_MIN_SIZE", 2, int),
    "max_size": env_number("DATABASE_POOL_MAX_SIZE", 8, int),
    # Seconds a request waits for a pooled connection; while the server is unreachable the
    # pool keeps retrying for this long, so it bounds a dead server's 503 too.
    "timeout": env_number("DATABASE_POOL_TIMEOUT", DATABASE_CONNECT_TIMEOUT_S, float),
}


# psycopg prepares a server-bound statement on its connection after this many runs; only
# the lookup fast path binds server-side (api.hotpath.compiled), Django's own cursors bind
# client-side and never prepare. "none" turns it off (PgBouncer in transaction mode).
_prepare_threshold = env_str("DATABASE_PREPARE_THRESHOLD", "5")
DATABASE_PREPARE_THRESHOLD = (
    None
    if _prepare_threshold.lower() == "none"
    else env_number("DATABASE_PREPARE_THRESHOLD", 5, int)
)


def server_database(url: str) -> dict:
    """A server alias from a URL (dj-database-url), with connect timeout and optional pool."""
    config = dj_database_url.parse(
        url, conn_max_age=0 if DATABASE_POOL else CONN_MAX_AGE, conn_health_checks=True
    )
    if config["ENGINE"] == "django.db.backends.postgresql":
        config["OPTIONS"] = {
            "connect_timeout": DATABASE_CONNECT_TIMEOUT_S,
            "prepare_threshold": DATABASE_PREPARE_THRESHOLD,
            **config.get("OPTIONS", {}),
        }
        if DATABASE_POOL:
            config["OPTIONS"]["pool"] = DATABASE_POOL_OPTIONS
    return config


DATABASES = {
    alias: (
        server_database(env_str(f"DATABASE_URL_{alias.upper()}"))
        if env_str(f"DATABASE_URL_{alias.upper()}")
        else sqlite_database(alias)
    )
    for alias in DATABASE_ALIASES
}
for _alias in ROUTED_ALIASES:
    # Routed stores never depend on default, so a test may create any subset of them.
    DATABASES[_alias].setdefault("TEST", {})["DEPENDENCIES"] = []

# Read replicas: DATABASE_REPLICA_URLS_USERS=url1,url2 adds aliases users_replica1, ...
# In tests each mirrors its primary (the same test database).
DATABASE_REPLICAS: dict[str, list[str]] = {}
for _alias in ROUTED_ALIASES:
    for _number, _url in enumerate(env_list(f"DATABASE_REPLICA_URLS_{_alias.upper()}"), 1):
        _replica = f"{_alias}_replica{_number}"
        DATABASES[_replica] = {**server_database(_url), "TEST": {"MIRROR": _alias}}
        DATABASE_REPLICAS.setdefault(_alias, []).append(_replica)

DATABASE_ROUTERS = ["api.routers.DatabaseRouter"]
# Read-your-writes across requests (api.pinning): how long after a write a client's
# reads of that alias go to the primary (django-multidb-router's default).
REPLICA_PINNING_SECONDS = env_number("REPLICA_PINNING_SECONDS", 15, float)
# Replicas leave the rotation while down or lagging past REPLICA_MAX_LAG_SECONDS, checked
# every REPLICA_CHECK_SECONDS by one thread per process (api.replica_health; 0: off).
REPLICA_CHECK_SECONDS = env_number("REPLICA_CHECK_SECONDS", 2, float)
REPLICA_MAX_LAG_SECONDS = env_number("REPLICA_MAX_LAG_SECONDS", 5, float)

# ------------------------------------------------------------------------------
# Django REST framework
# https://www.django-rest-framework.org/api-guide/settings/
# ------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["api.renderers.ORJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["api.renderers.ORJSONParser"],
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "api.schema.AutoSchema",
    "COERCE_DECIMAL_TO_STRING": True,
    # Every API view's policies (api.access): a token when sent, the scopes a request
    # needs, a rate per tier and kind. Views without personal data or writes need none.
    "DEFAULT_AUTHENTICATION_CLASSES": ["api.access.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["api.access.ScopedAccess"],
    "DEFAULT_THROTTLE_CLASSES": ["api.throttles.KindRateThrottle"],
    # Proxies in front of Gunicorn that append to X-Forwarded-For (nginx: 1). 0 throttles
    # anonymous clients by the connection's address, which no client can forge.
    "NUM_PROXIES": env_number("NUM_PROXIES", 0, int),
}
# https://drf-spectacular.readthedocs.io/en/latest/settings.html
SPECTACULAR_SETTINGS = {
    "TITLE": "data_project API",
    "DESCRIPTION": "Users, products and orders in three routed databases: indexed lookups "
    "and concurrent, validated inserts.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["api.access.DocsAccess"],
    # Swagger UI from drf-spectacular-sidecar (its version pinned in requirements.txt),
    # not a CDN: the docs render offline and never change under us.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "OrderStatusEnum": "api.models.Order.Status",
        "RecordStatusEnum": "api.services.results.STATUSES",
    },
}

# ------------------------------------------------------------------------------
# Security: on by DJANGO_ENV=production, each switch overridable
# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
# ------------------------------------------------------------------------------
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", default=PRODUCTION)
# Load balancers probe health over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^api/health/$"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env_number("DJANGO_SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0, int)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", PRODUCTION)
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")
X_FRAME_OPTIONS = "DENY"

# ------------------------------------------------------------------------------
# Logging: everything to stderr, where Gunicorn and the service manager collect it
# https://docs.djangoproject.com/en/5.2/topics/logging/
# ------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": env_str("DJANGO_LOG_LEVEL", "WARNING")},
}
