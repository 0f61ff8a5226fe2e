"""Benchmark: a throttle's cost per request, DRF's ``SimpleRateThrottle`` against ours.

Both count on the same shared cache (Redis at ``--redis``, a database of its own, emptied
before and after; or ``--cache database``: the default database's cache table under
``DATA_DIR``), one client at 60,000 requests per minute, in one process:

- ``drf``: ``SimpleRateThrottle``, which reads the client's whole request history and
  writes it back on every request, measured with 1, 1,000 and 5,000 requests already in
  the window;
- ``leased``: `api.http.throttling.RateLimiter`, a counter raised once per lease of 600;
- ``leased, lease 1``: the same at 60 per minute, a cache round trip per request;
- ``refused``: the same past its limit, no round trip.

Prints µs per request and drf / leased. Usage:
``python bench/throttle.py [--redis redis://127.0.0.1:6379/14] [--cache database]``.
"""

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--cache", choices=["redis", "database"], default="redis")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    os.environ["DJANGO_SETTINGS_MODULE"] = "data_project.settings"
    if args.cache == "redis":
        os.environ["REDIS_URL"] = args.redis
    import django

    django.setup()
    from django.conf import settings
    from django.core.cache import cache
    from django.core.management import call_command
    from rest_framework.throttling import SimpleRateThrottle

    from api.http.throttling import RateLimiter

    if args.cache == "database":
        call_command("migrate_all", verbosity=0)
    cache.clear()

    class DrfThrottle(SimpleRateThrottle):
        rate = "60000/min"

        def get_cache_key(self, request, view):
            return "bench-drf"

    class Request:
        META = {"REMOTE_ADDR": "127.0.0.1"}

    def per_request(function, repeat: int) -> float:
        started = time.perf_counter()
        for _ in range(repeat):
            function()
        return (time.perf_counter() - started) / repeat * 1e6

    print(f"cache: {args.cache}")
    drf = {}
    for already in (1, 1000, 5000):
        while len(cache.get("bench-drf", [])) < already - 1:
            DrfThrottle().allow_request(Request, None)
        drf[already] = per_request(lambda: DrfThrottle().allow_request(Request, None), 200)
        print(f"drf, {already:>5} in the window    {drf[already]:>8.1f} µs/request")
    rates = settings.THROTTLE_RATES
    rates["standard"]["lookup"] = "60000/min"
    limiter = RateLimiter()
    leased = per_request(lambda: limiter.admit("bench", "standard", "lookup"), 20000)
    print(f"leased (lease 600)            {leased:>8.2f} µs/request")
    rates["anonymous"]["lookup"] = "60/min"
    small = RateLimiter()
    one = per_request(lambda: small.admit("bench-small", "anonymous", "lookup"), 60)
    print(f"leased, lease 1 (60/min)      {one:>8.1f} µs/request")
    refused = per_request(lambda: small.admit("bench-small", "anonymous", "lookup"), 2000)
    print(f"refused past the limit        {refused:>8.2f} µs/request")
    for already, cost in drf.items():
        print(f"drf ({already} in the window) / leased = {cost / leased:,.0f}")
    cache.clear()
    return 0


if __name__ == "__main__":
    sys.exit(main())
