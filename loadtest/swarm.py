"""What the Locust swarm (``locustfile.py``) asks for, readable without Locust or Django.

`SWARM_WEIGHTS` is each lookup key's share of the swarm's lookups; `swarm_name` the name
its requests carry in Locust's statistics and the reports.
"""

from api.domain.lookup_keys import LOOKUP_KEYS, LookupKey

# Mostly by user id, as a shop's traffic would be; keys not named are not swarmed.
SWARM_WEIGHTS = {"user_id": 70, "email": 10, "organization_id": 2, "product_id": 2, "order_id": 2}
SWARMED = [LOOKUP_KEYS[name] for name in SWARM_WEIGHTS]


def swarm_name(key: LookupKey) -> str:
    """The name of a key's lookup requests: ``"get user by email"``."""
    return f"get {key.store.removesuffix('s')} by {key.column}"
