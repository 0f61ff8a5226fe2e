"""Whether a peer's address is one of the trusted proxies (``FORWARDED_ALLOW_IPS``: addresses
or networks): one rule for the throttles' client address (`api.http.throttling`) and
Granian's proxy headers (`data_project.granian_server`). Imports nothing of Django's."""

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def proxy_networks(proxies) -> tuple[Network, ...]:
    """The networks ``proxies`` name (``"127.0.0.1"``, ``"10.0.0.0/8"``; host bits allowed).

    Raises `ValueError` for one that is no address or network.
    """
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def in_networks(address: str | None, networks: tuple[Network, ...]) -> bool:
    """Whether ``address`` lies in one of ``networks``; False for anything that is no
    address (None, a UNIX socket's peer, whatever a client wrote)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
