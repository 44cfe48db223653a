"""The client's IP address, the one function every per-visitor rule uses (click limits, sign-up
signals, the failed-key throttle, django-axes via AXES_CLIENT_IP_CALLABLE).

Behind a TLS proxy the TCP peer (REMOTE_ADDR) is the proxy; the visitor is in X-Forwarded-For,
which each proxy extends on the right and which anybody can fill on the left. So the header is
read right to left, and only as far as our own proxies go:

- REFERRAL_TRUSTED_PROXIES (CIDRs, e.g. "10.0.0.0/8,2001:db8::/32"): if the peer is one of them,
  the client is the rightmost address in the header that is not; a peer outside them is the
  client, whatever its header says;
- else REFERRAL_PROXY_COUNT (n > 0): exactly n proxies are in front; the client is the n-th address
  from the right (a header with fewer addresses is not trusted);
- neither: REMOTE_ADDR, the header is ignored (the default: no proxy, or one not yet declared).

Anything that is not an IP address ends the walk at the last address we could trust.
"""
import ipaddress
from contextlib import suppress
from functools import lru_cache

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(spec: tuple[str, ...]) -> tuple[Network, ...]:
    networks = []
    for item in spec:
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ValueError(f"REFERRAL_TRUSTED_PROXIES: {item!r} is not an IP network (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def _address(text: str) -> str | None:
    """The normalised address in one X-Forwarded-For item ("1.2.3.4", "1.2.3.4:80", "[::1]:80")."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip.version == network.version and ip in network for network in networks)


def client_ip(request) -> str:
    """The visitor's address as a normalised string; "" when even the peer's is not an address."""
    cached = getattr(request, "_client_ip", None)
    if cached is not None:
        return cached
    meta = getattr(request, "META", {})
    peer = _address(meta.get("REMOTE_ADDR", "") or "") or ""
    found = _resolve(peer, meta.get("HTTP_X_FORWARDED_FOR", "") or "")
    with suppress(AttributeError):  # an object that takes no attributes is just not cached
        request._client_ip = found
    return found


def _resolve(peer: str, forwarded: str) -> str:
    config = getattr(settings, "REFERRAL", {})
    networks = _networks(tuple(config.get("TRUSTED_PROXIES") or ()))
    count = int(config.get("PROXY_COUNT") or 0)
    if not peer or not forwarded.strip() or not (networks or count > 0):
        return peer
    hops = [_address(item) for item in forwarded.split(",")]
    if networks:
        if not _trusted(peer, networks):
            return peer
        last = peer
        for hop in reversed(hops):
            if hop is None:
                return last
            if not _trusted(hop, networks):
                return hop
            last = hop
        return last  # every hop is one of our proxies
    if len(hops) < count:
        return peer
    # Walk the hops our proxies appended (right to left); a malformed one ends the walk there.
    last = peer
    for hop in reversed(hops[len(hops) - count:]):
        if hop is None:
            return last
        last = hop
    return last
