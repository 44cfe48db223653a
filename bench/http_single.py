"""Single-event POST latency over real HTTP: gunicorn (one sync worker) serving the portal on
PostgreSQL, a client in another process posting one `usage.charged` per request, with the
worker's database connection kept between requests (`DATABASE_CONN_MAX_AGE`, the default
300 s) and opened per request (0), the two servers taking turns in the same run.

    DATABASE_URL=postgres://... .venv/bin/python bench/http_single.py [--requests 200] [--rounds 2]

The database must be a scratch one: the script migrates it, loads the `runpod` preset and signs
up 50 referred accounts (as bench/ingest.py does). The first 20 requests of each round warm the
worker up and are not counted.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "referrals_site.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from bench.ingest import sign_up  # noqa: E402
from referrals.api.keys import api_key_create  # noqa: E402
from referrals.presets import load_preset  # noqa: E402
from tests.helpers import free_port, wait_until  # noqa: E402

WARM_UP = 20


def serve(port: int, conn_max_age: int) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_CONN_MAX_AGE": str(conn_max_age), "API_RATE_LIMIT": "1000000/minute",
           "REDIS_URL": "", "API_THROTTLE_REDIS_URL": "", "CELERY_BROKER_URL": "memory://",
           "CELERY_TASK_ALWAYS_EAGER": "true", "DJANGO_ALLOWED_HOSTS": "127.0.0.1"}
    server = subprocess.Popen(  # noqa: S603 - our own fixed command line
        [str(Path(sys.executable).with_name("gunicorn")), "referrals_site.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--log-level", "warning"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/", timeout=2):  # noqa: S310 - local
                return True
        except OSError:
            return False

    wait_until(up, timeout=30, what="gunicorn to serve", every=0.2)
    return server


def post_singles(port: int, key: str, accounts: list[str], n: int) -> list[float]:
    latencies = []
    for i in range(WARM_UP + n):
        body = json.dumps({"id": f"http-{uuid.uuid4().hex}", "type": "usage.charged",
                           "account": accounts[i % len(accounts)], "occurred_at": "2026-01-03T00:00:00+00:00",
                           "amount": "1.25", "product": "pods"}).encode()
        request = urllib.request.Request(  # noqa: S310 - our own local server
            f"http://127.0.0.1:{port}/api/v1/events", data=body, method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - our own local server
            assert json.load(response)["results"][0]["status"] == "accepted"
        if i >= WARM_UP:
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="timed single POSTs per round and side")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("bench/http_single.py measures PostgreSQL: set DATABASE_URL=postgres://... (a scratch database)")
    call_command("migrate", verbosity=0)
    load_preset("runpod")
    accounts = sign_up(uuid.uuid4().hex[:8], referrers=5, accounts=50)
    key = api_key_create(name=f"http-{uuid.uuid4().hex[:6]}", scopes=["events:write"])[1]
    connection.close()
    print(f"{args.requests} single-event POSTs per round and side, one gunicorn sync worker, PostgreSQL; "
          f"load {os.getloadavg()}")
    for round_number in range(1, args.rounds + 1):
        for conn_max_age in (0, 300):
            port = free_port()
            server = serve(port, conn_max_age)
            try:
                latencies = sorted(post_singles(port, key, accounts, args.requests))
            finally:
                server.terminate()
                server.wait(timeout=20)
            p90, p99 = latencies[int(len(latencies) * 0.9)], latencies[int(len(latencies) * 0.99)]
            print(f"round {round_number}  DATABASE_CONN_MAX_AGE={conn_max_age:<4} "
                  f"p50 {statistics.median(latencies):6.1f} ms  p90 {p90:6.1f} ms  p99 {p99:6.1f} ms")


if __name__ == "__main__":
    main()
