"""Per-key throttling with atomic counters: in a real redis-server when one is configured
(shared by every server process), in the local-memory cache otherwise."""
import shutil
import socket
import subprocess
import threading
import time

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from referrals.api.auth import Counters, parse_rate
from referrals.api.keys import api_key_create
from tests.helpers import free_port, signup


@pytest.fixture
def redis_url(tmp_path):
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip(reason="needs redis-server on the PATH (apt-get install redis-server; make test installs it)")
    port = free_port()
    server = subprocess.Popen(  # noqa: S603 - our own fixed command line
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def reader(db):
    signup("alice")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(name='dash', scopes=['read'])[1]}")
    return api


def hammer(incr, n: int = 40) -> list[int]:
    barrier = threading.Barrier(n)
    seen: list[int] = []

    def one():
        barrier.wait()
        seen.append(incr())

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(seen)


def test_it_parses_rates():
    assert [parse_rate(r) for r in ("6000/minute", "10/s", "5/hour", "1/day")] == [
        (6000, 60), (10, 1), (5, 3600), (1, 86400)]


def test_it_throttles_a_key_with_redis_counters(reader, redis_url, settings):
    import redis

    settings.API_THROTTLE_REDIS_URL = redis_url
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": "3/minute"}}
    assert [reader.get("/api/v1/accounts/alice").status_code for _ in range(4)] == [200, 200, 200, 429]
    keys = redis.Redis.from_url(redis_url).keys("throttle:api_key:*")
    assert len(keys) == 1
    assert int(redis.Redis.from_url(redis_url).get(keys[0])) == 4
    assert 0 < redis.Redis.from_url(redis_url).ttl(keys[0]) <= 61


def test_it_counts_atomically_in_redis_across_clients(redis_url, settings):
    settings.API_THROTTLE_REDIS_URL = redis_url
    # Separate Counters objects stand for separate server processes sharing one Redis.
    processes = [Counters() for _ in range(4)]
    seen = hammer(lambda: processes[threading.get_ident() % 4].incr("throttle:test:k", ttl=60))
    assert seen == list(range(1, 41))


def test_it_counts_atomically_in_the_local_cache_without_redis(db, settings):
    settings.API_THROTTLE_REDIS_URL = ""
    cache.clear()
    counters = Counters()
    assert hammer(lambda: counters.incr("throttle:test:local", ttl=60)) == list(range(1, 41))


def test_it_lets_requests_through_when_redis_is_unreachable(reader, settings):
    settings.API_THROTTLE_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api_key": "1/minute"}}
    assert [reader.get("/api/v1/accounts/alice").status_code for _ in range(2)] == [200, 200]
