"""Every Prometheus metric the service exports, defined once (prometheus-client).

The objects here are recorded where their events happen (the layers above import this
package, it imports nothing else of ``api``); `api.metrics.exposition` renders them for
``GET /metrics``, `api.metrics.wsgi` times every request. Served by a pre-forking server,
each worker writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` (the client's
multiprocess mode, set up per server by `data_project.metrics_dir`) and the worker that
answers a scrape sums them; without that variable (tests, ``runserver``, commands) the
values live in the process. ``METRICS=0`` stops timing requests and queries and answers
``/metrics`` with 404; the event counters below then still count, in memory, unread.

The metric list, with units and labels, is in the README's "Metrics" section; names are
Prometheus's conventions (``_seconds``, ``_bytes``, ``_total`` for counters).
"""

from prometheus_client import Counter, Gauge, Histogram, Summary

from api.metrics.batching import BatchedHistogram, BatchedSummary

# Seconds: a lookup answers in well under a millisecond, a swarm at 1000 users queues for
# hundreds of milliseconds, a store past its deadline fails after seconds.
REQUEST_BUCKETS_SECONDS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

REQUEST_SECONDS = Histogram(
    "dp_http_request_duration_seconds",
    "Time from the request reaching the application to its response being returned, "
    "by route pattern, lookup key (run-query), method and status class; _count counts requests",
    ["route", "key", "method", "status"],
    buckets=REQUEST_BUCKETS_SECONDS,
)
RECORDS = Counter(
    "dp_insert_records",
    "Records of insert batches answered over HTTP, by store and outcome "
    "(inserted, rejected, failed)",
    ["store", "outcome"],
)
BATCHES = Counter(
    "dp_insert_batches", "Insert batches answered, by status (200, 207, 503)", ["status"]
)
IDEMPOTENT_REPLAYS = Counter(
    "dp_idempotent_replays", "Answers replayed for a repeated Idempotency-Key"
)
THROTTLED = Counter(
    "dp_throttled_requests", "Requests refused with 429, by throttle scope", ["scope"]
)
QUERY_SECONDS = Summary(
    "dp_db_query_seconds",
    "Time in database statements (execute and fetch), by database alias; "
    "replicas are <store>_replicaN",
    ["alias"],
)
CONNECTIONS_OPEN = Gauge(
    "dp_db_connections_open",
    "Database connections open, by alias, summed over the live workers",
    ["alias"],
    multiprocess_mode="livesum",
)
BREAKER_OPEN = Gauge(
    "dp_breaker_open",
    "1 while a store's circuit breaker for reads or writes is open in any live worker",
    ["store", "access"],
    multiprocess_mode="livemax",
)
BREAKER_TRIPS = Counter(
    "dp_breaker_trips", "Times a store's circuit breaker opened", ["store", "access"]
)
QUEUE_DEPTH = Gauge(
    "dp_insert_queue_depth",
    "Insert batch parts queued or running in a store's bulkhead, summed over the live workers",
    ["store"],
    multiprocess_mode="livesum",
)
REPLICA_LAG = Gauge(
    "dp_replica_lag_seconds",
    "Replication lag of a replica as the workers' monitors last measured it (the largest)",
    ["replica"],
    multiprocess_mode="livemax",
)
REPLICA_IN_ROTATION = Gauge(
    "dp_replica_in_rotation",
    "1 when every live worker sends reads to the replica, 0 when any keeps it out",
    ["replica"],
    multiprocess_mode="livemin",
)

# Every request and every statement is observed through a per-process batch
# (`api.metrics.batching`: the client's own observe would cost a sixth of a lookup).
REQUESTS = BatchedHistogram(REQUEST_SECONDS)
QUERIES = BatchedSummary(QUERY_SECONDS)
