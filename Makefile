# The two commands of the README: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.DEFAULT_GOAL := help
# The main job's figures; override on the command line: make demo USERS=200 RUN_TIME=30s
USERS ?= 1000
SPAWN_RATE ?= 100
RUN_TIME ?= 60s
ROWS ?= 1000000
BIND ?= 127.0.0.1:8000
LOCUST_PROCESSES ?= 4
# ACCESS=tokens (the default) serves as production and swarms with a token and
# Idempotency-Keys; ACCESS=open as development, without them (it also picks the benchmarks' mode).
ACCESS ?= tokens
# Thresholds (k6-style): make demo P95_MS=200 MIN_RPS=800 fails the run when p95 is above
# P95_MS or requests/s below MIN_RPS (any failed request always fails it). Empty: not set.
P95_MS ?=
MIN_RPS ?=
# SERVER=granian serves with Granian (data_project/granian_server.py, the same environment
# variables as gunicorn.conf.py) instead of Gunicorn, for serve, demo and every loadtest.
SERVER ?= gunicorn
SERVE_gunicorn = $(PY) -m gunicorn -c gunicorn.conf.py data_project.wsgi
SERVE_granian = $(PY) -m data_project.granian_server
LOADTEST = $(PY) manage.py loadtest --users $(USERS) --spawn-rate $(SPAWN_RATE) \
	--run-time $(RUN_TIME) --rows $(ROWS) --bind $(BIND) --access $(ACCESS) --server $(SERVER) \
	$(if $(P95_MS),--p95-ms $(P95_MS)) $(if $(MIN_RPS),--min-rps $(MIN_RPS))
# The main job is served as production would be: nginx (deploy/nginx.conf) in front of
# the server, so slow clients cannot tie up its workers. PROXY= serves it directly (then
# Gunicorn's workers run 16 threads each: gunicorn.conf.py).
PROXY ?= --proxy

.PHONY: help venv nginx prometheus browser serve wrk valgrind demo loadtest loadtest-lookups loadtest-distributed bench-generate bench-lookup \
	bench-generate-growth \
	pg-data loadtest-pg loadtest-pg-lookups bench-lookup-pg bench-swarm-pg \
	replica-start replica-stop replica-status replica-destroy demo-cluster \
	bench-instructions bench-cpu-profile perf bench-throttle bench-faults bench-faults-pg bench-faults-restart bench-swarm bench-inserts bench-inserts-pg \
	bench-servers \
	test lint format migrate clean

help:
	@echo "make demo      - the main job: assignment insert, 1M rows, Gunicorn + 1000-user Locust, reports/index.html"
	@echo "                 (ROWS, USERS, RUN_TIME, ...; thresholds P95_MS=, MIN_RPS= set the exit code)"
	@echo "make test      - set up, ruff check and format, import contracts, migrations check, pytest"
	@echo "make serve     - serve the loaded data with Gunicorn at http://$(BIND)/ (docs, /run/)"
	@echo "                 (SERVER=granian: serve, demo and the loadtests with Granian)"
	@echo "make loadtest-lookups      - the swarm with the lookup-by-id task only"
	@echo "make loadtest-distributed  - the swarm from LOCUST_PROCESSES Locust processes"
	@echo "make loadtest-pg           - the main job on PostgreSQL (PG_URL); loadtest-pg-lookups"
	@echo "make demo-cluster          - the main job on PostgreSQL + replica, 2 servers, distributed Locust"

# The venv is rebuilt whenever a requirements file changes.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

# Debian's nginx, for the proxy in front of Gunicorn (the demo and the slow-client tests).
nginx:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx)

# Debian's Prometheus, which the load tests start to scrape the servers' /metrics (loadtest/
# prometheus.py). Its recommended node exporter is left out, and the service the package
# enables is stopped and disabled: each run starts its own on a free loopback port, and
# nothing else should listen. Optional: a failed install leaves the runs without the
# server's side (their report says why), so it never fails the target.
prometheus:
	@command -v prometheus >/dev/null 2>&1 || test -x /usr/bin/prometheus || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends prometheus && $(STOP_PROMETHEUS_SERVICE); \
	} || echo "make prometheus: could not install Debian's prometheus; the load tests run without the server's side"
# systemd where it runs; else the package's init script (if any was started despite policy-rc.d).
STOP_PROMETHEUS_SERVICE = ( if [ -d /run/systemd/system ]; then \
		systemctl disable --now prometheus; \
	else \
		service prometheus stop; update-rc.d prometheus disable; \
	fi >/dev/null 2>&1 || true )

# Debian's Chromium, for the browser tests (api/tests/test_browser.py, Playwright drives it).
browser:
	@command -v chromium >/dev/null 2>&1 || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

migrate: venv
	$(PY) manage.py migrate_all --verbosity 0

# collectstatic compresses Swagger UI's bundle (gzip and Brotli, ~40 s): only when the
# installed packages or the project's own static files changed.
var/static/.collected: $(VENV)/.installed $(wildcard api/static/api/*)
	$(PY) manage.py collectstatic --noinput --verbosity 0
	touch $@

# The loaded data for a browser: Gunicorn as configured (gunicorn.conf.py, DEBUG off, static
# files by WhiteNoise, collected and compressed first), or Granian with SERVER=granian,
# served as development: no token needed, the docs and /run/ on. Served directly, so both
# hold slow clients themselves (gunicorn.conf.py's threads; Granian's Rust I/O). Ctrl-C stops it.
serve: migrate var/static/.collected
	@test -n "$(SERVE_$(SERVER))" || { echo "SERVER must be gunicorn or granian"; exit 1; }
	@echo "Serving http://$(BIND)/ with $(SERVER) (Ctrl-C stops)"
	BIND=$(BIND) $(SERVE_$(SERVER))

demo: migrate nginx prometheus
	$(PY) manage.py insert_data
	$(LOADTEST) $(PROXY)

loadtest: migrate nginx prometheus
	$(LOADTEST) $(PROXY)

loadtest-lookups: migrate nginx prometheus
	$(LOADTEST) $(PROXY) --tags user_id --reports reports/lookups

loadtest-distributed: migrate nginx prometheus
	$(LOADTEST) $(PROXY) --processes $(LOCUST_PROCESSES) --reports reports/distributed

# The main job with the three routed aliases on PostgreSQL (PG_URL): databases
# $(PG_PREFIX)users/products/orders, created and loaded on first use; default (the token)
# stays an SQLite file in PG_DATA_DIR.
PG_PREFIX ?= $(PG_URL)/dp_
PG_DATA_DIR ?= var/pg
PG_DATA_ENV = DATA_DIR=$(PG_DATA_DIR) DATABASE_URL_USERS=$(PG_PREFIX)users \
	DATABASE_URL_PRODUCTS=$(PG_PREFIX)products DATABASE_URL_ORDERS=$(PG_PREFIX)orders
PG_USERS_LOADED = $(PY) -c "import psycopg, sys; \
	c = psycopg.connect('$(PG_PREFIX)users', connect_timeout=3); \
	sys.exit(c.execute('SELECT count(*) FROM users').fetchone()[0] < 1000000)"

pg-data: venv
	$(PG_DATA_ENV) $(PY) manage.py migrate_all --verbosity 0
	@$(PG_USERS_LOADED) 2>/dev/null || $(PG_DATA_ENV) $(PY) manage.py generate_data \
		--users 1000000 --products 10000 --orders 10000 --clear

loadtest-pg: pg-data nginx prometheus
	$(PG_DATA_ENV) $(LOADTEST) $(PROXY) --reports reports/postgresql

# The main job as a cluster on one machine (docs/scaling.md): the PostgreSQL aliases with
# reads on the streaming replica (deploy/replica.sh, port 5433), two servers (SERVER) sharing
# WEB_CONCURRENCY behind nginx, and Locust as a master with LOCUST_WORKERS workers.
REPLICA_PREFIX ?= postgres://postgres@127.0.0.1:5433/dp_
LOCUST_WORKERS ?= 2
CLUSTER_ENV = DATABASE_REPLICA_URLS_USERS=$(REPLICA_PREFIX)users \
	DATABASE_REPLICA_URLS_PRODUCTS=$(REPLICA_PREFIX)products \
	DATABASE_REPLICA_URLS_ORDERS=$(REPLICA_PREFIX)orders

demo-cluster: pg-data nginx prometheus replica-start
	$(PG_DATA_ENV) $(CLUSTER_ENV) $(LOADTEST) --instances 2 --processes $(LOCUST_WORKERS) \
		--reports reports/cluster

loadtest-pg-lookups: pg-data nginx prometheus
	$(PG_DATA_ENV) $(LOADTEST) $(PROXY) --tags user_id --reports reports/postgresql-lookups

# ruff, and import-linter's contracts (pyproject.toml): the layers import only downward.
lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

# The suite runs twice: on the SQLite default, then with the three routed aliases on
# PostgreSQL when a server answers at PG_URL (REQUIRE_POSTGRES=1 makes that mandatory).
# The Redis tests (api/tests/test_access.py) skip when no Redis answers at REDIS_TEST_URL
# unless REQUIRE_REDIS=1, as CI runs them.
PG_URL ?= postgres://postgres@127.0.0.1:5432
REDIS_TEST_URL ?= redis://127.0.0.1:6379/15
# REQUIRE_ALL_TESTS=1 (CI) fails any skip but the other backend's tests (api/tests/conftest.py).
export REQUIRE_REDIS REDIS_TEST_URL REQUIRE_POSTGRES PG_URL REQUIRE_REPLICA REQUIRE_BROWSER \
	REQUIRE_PROMETHEUS REQUIRE_ALL_TESTS
PG_ENV = DATABASE_URL_USERS=$(PG_URL)/dp_users DATABASE_URL_PRODUCTS=$(PG_URL)/dp_products \
	DATABASE_URL_ORDERS=$(PG_URL)/dp_orders
# The replica tests (api/tests/test_replica.py) need a streaming replica of the local
# server: started here where this user can make one (root, Debian's PostgreSQL tools);
# they skip without it unless REQUIRE_REPLICA=1, as CI runs them (the tests that stop and
# start it need root too: they fail without it under REQUIRE_REPLICA). The test that
# restarts a PostgreSQL server (api/tests/test_restart.py) makes its own throwaway one
# (deploy/faults_cluster.sh, port 5440; root): it fails without it under REQUIRE_POSTGRES.
REPLICA_FOR_TESTS = if [ "$$(id -u)" = 0 ] && command -v pg_createcluster >/dev/null; then \
	deploy/replica.sh start || [ -z "$(REQUIRE_REPLICA)" ]; fi
PG_REACHABLE = $(PY) -c "import psycopg; psycopg.connect('$(PG_URL)/postgres', connect_timeout=3).close()"

# The browser tests skip where no Chromium exists unless REQUIRE_BROWSER=1, as CI runs them.
test: lint nginx prometheus browser
	$(PY) manage.py makemigrations --check --dry-run --verbosity 0
	$(PY) -m pytest
	@if $(PG_REACHABLE) 2>/dev/null; then \
		$(REPLICA_FOR_TESTS); \
		echo "== the suite on PostgreSQL ($(PG_URL)) =="; \
		$(PG_ENV) $(PY) -m pytest; \
	elif [ -n "$(REQUIRE_POSTGRES)" ]; then \
		echo "PostgreSQL at $(PG_URL) is required (REQUIRE_POSTGRES) but unreachable"; exit 1; \
	else \
		echo "PostgreSQL at $(PG_URL) unreachable: skipped the PostgreSQL run"; \
	fi

# Benchmarks against ../shared/anchors (not tests: they print ratios from one run).
bench-generate: venv
	$(PY) bench/generate.py --rounds 2

# generate_data --users N at 1M, 2M, 5M and 10M beside the like-for-like floor
# (bench/users_floor.py), on SQLite, then on PostgreSQL (databases $(PG_URL)/dp_growth_*,
# created and dropped here) when a server answers at PG_URL (issue 32). BENCH_ARGS: e.g.
# --quick (small sizes, under a minute), --sizes 1000000,3000000, --max-load 2.
bench-generate-growth: venv
	$(PY) bench/generate.py --growth $(BENCH_ARGS)
	@if $(PG_REACHABLE) 2>/dev/null; then \
		$(PY) bench/generate.py --growth --postgres $(PG_URL)/dp_growth_ $(BENCH_ARGS); \
	else echo "PostgreSQL at $(PG_URL) unreachable: SQLite only"; fi

# Insert batches of 10 users under wrk against the raw insert anchor (issue 27, target >= 0.7),
# on SQLite and on PostgreSQL (databases $(PG_URL)/dp_bench_*, created and emptied here).
bench-inserts: venv wrk
	$(PY) bench/inserts.py --access $(ACCESS)

bench-inserts-pg: venv wrk
	$(PY) bench/inserts.py --access $(ACCESS) --postgres $(PG_URL)/dp_bench_

# Hello, lookups and insert batches on Gunicorn and Granian, the project beside the raw
# anchors and the FastAPI + asyncpg peer (issue 26): SQLite in var/bench-servers, and
# PostgreSQL (databases $(PG_URL)/dp_servers_*) when a server answers at PG_URL; both
# generated with 1M users on first use. BENCH_ARGS: e.g. --quick, --rounds 5, --only lookup.
BENCH_ARGS ?=
bench-servers: venv wrk
	@if $(PG_REACHABLE) 2>/dev/null; then pg="--postgres $(PG_URL)/dp_servers_"; \
	else pg=--sqlite-only; echo "PostgreSQL at $(PG_URL) unreachable: SQLite only"; fi; \
	echo $(PY) bench/servers.py --access $(ACCESS) $$pg $(BENCH_ARGS); \
	$(PY) bench/servers.py --access $(ACCESS) $$pg $(BENCH_ARGS)

# Debian's wrk and valgrind, for the lookup benchmarks.
wrk:
	@command -v wrk >/dev/null 2>&1 || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)

valgrind:
	@command -v valgrind >/dev/null 2>&1 || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind)

perf:
	@command -v perf >/dev/null 2>&1 || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf)

# The lookup under wrk against the raw anchor, served as production (a token per request);
# ACCESS=open serves it as development.
bench-lookup: venv wrk
	$(PY) bench/lookup.py --access $(ACCESS)

# A streaming replica of the local PostgreSQL server on port 5433 (deploy/replica.sh):
# idempotent start, stop, and destroy (which also drops the primary's replication slot).
replica-start replica-stop replica-status replica-destroy:
	deploy/replica.sh $(subst replica-,,$@)

# The same on PostgreSQL (PG_PREFIX) against anchors/raw_wsgi_pg.py (target >= 0.9).
bench-lookup-pg: pg-data wrk
	$(PY) bench/lookup.py --access $(ACCESS) --postgres $(PG_PREFIX) --data-dir $(PG_DATA_DIR)

# Instructions per lookup under callgrind: repeatable where req/s is not.
bench-instructions: venv valgrind
	$(PY) bench/instructions.py --access $(ACCESS)

# A Granian worker's CPU per lookup by where it runs (kernel, interpreter, Granian, SQLite),
# sampled by perf under wrk, the project beside the raw anchor.
bench-cpu-profile: venv wrk perf
	$(PY) bench/cpu_profile.py --access $(ACCESS)

# The 1000-user swarm against the raw anchor; the anchor's ids run 1..1,000,000, so both
# use a users table of a million rows (BENCH_DATA_DIR, generated on first use).
BENCH_DATA_DIR ?= var/bench
# A throttle's cost per request: DRF's SimpleRateThrottle against api.http.throttling, on Redis.
bench-throttle: venv
	$(PY) bench/throttle.py

# One store locked: the other stores' lookup latency and the locked store's 503s.
bench-faults: venv
	$(PY) bench/faults.py

# The same on PostgreSQL: new databases $(PG_PREFIX)faults_users, ... (created, generated).
bench-faults-pg: venv
	$(PY) bench/faults.py --postgres $(PG_PREFIX)faults_

# The PostgreSQL server of the stores stopped and started under lookups and insert batches:
# a throwaway server of its own (deploy/faults_cluster.sh, port 5440; root).
bench-faults-restart: venv
	$(PY) bench/faults.py --scenario restart

bench-swarm: venv
	@if [ ! -f $(BENCH_DATA_DIR)/users.sqlite3 ]; then \
		DATA_DIR=$(BENCH_DATA_DIR) $(PY) manage.py migrate_all --verbosity 0 && \
		DATA_DIR=$(BENCH_DATA_DIR) $(PY) manage.py generate_data \
			--users 1000000 --products 10000 --orders 10000; \
	fi
	$(PY) bench/swarm.py --data-dir $(BENCH_DATA_DIR) --mixed

bench-swarm-pg: pg-data
	$(PY) bench/swarm.py --data-dir $(PG_DATA_DIR) --postgres $(PG_PREFIX) --mixed

format: venv
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean:
	rm -rf var reports .pytest_cache .ruff_cache
