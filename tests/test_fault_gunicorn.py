"""Faults on the real server (issue 15): gunicorn serving the portal against the test's
PostgreSQL database, two clients posting batches to POST /api/v1/events; one gunicorn worker is
killed with SIGKILL in the middle of the transaction that stores and applies a batch, and
PostgreSQL is restarted while batches are in flight. A client retries what got no answer, as an
integration would. Afterwards every id answered `accepted` (or `duplicate`) is stored, the sweeper
applies what the crash left (`tests/test_sweeper.py` kills a process between the committed parts
of a batch the task applies), each event's money is applied exactly once and `verify_ledger` is
clean.

PostgreSQL only, and only on a cluster started by scripts/pg-throwaway.sh (CI's PostgreSQL
pass): the test restarts that cluster with its pg_ctl, and never touches any other server.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from ledger.money import to_units
from referrals.api.keys import api_key_create
from referrals.engine import sweeper
from referrals.engine.verification import verify
from referrals.models import Event, Referral
from referrals.presets import load_preset
from tests.helpers import at, free_port, signup, wait_until
from tests.test_sweeper import database_url

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
ACCOUNTS = 25
BATCH = 50

pytestmark = pytest.mark.django_db(transaction=True)

# Each worker names its database sessions after its pid, so the test can see which worker is
# inside a request (and kill that one).
GUNICORN_CONFIG = """
import os

def post_fork(server, worker):
    os.environ["PGAPPNAME"] = f"fault-worker-{os.getpid()}"
"""




class Cluster:
    """The throwaway cluster the test database lives on, restartable with its own pg_ctl."""

    def __init__(self):
        if connection.vendor != "postgresql":
            pytest.skip(reason="needs PostgreSQL: set DATABASE_URL (CI's PostgreSQL pass, scripts/pg-throwaway.sh)")
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_setting('data_directory'), "
                               "(SELECT setting FROM pg_config WHERE name = 'BINDIR')")
                data, bindir = cursor.fetchone()
        except Exception as exc:
            pytest.skip(reason=f"cannot read the server's data directory ({type(exc).__name__}): needs a superuser")
        self.data = Path(data)
        self.dir = self.data.parent
        self.pg_ctl = Path(bindir) / "pg_ctl"
        if not (self.dir / "url").is_file() or not (self.dir / "bin").is_file():
            pytest.skip(reason=f"{self.data} is not a cluster of scripts/pg-throwaway.sh; the test restarts only those")
        if not self.pg_ctl.is_file() or not os.access(self.data, os.R_OK):
            pytest.skip(reason=f"needs the PostgreSQL server binaries and access to {self.data} (run as its owner)")
        owner = self.data.stat().st_uid
        if os.geteuid() == 0:
            import pwd
            self.prefix = ["runuser", "-u", pwd.getpwuid(owner).pw_name, "--"]
        elif os.geteuid() == owner:
            self.prefix = []
        else:
            pytest.skip(reason=f"the cluster in {self.data} belongs to another user; run as root or its owner")

    def restart(self) -> None:
        subprocess.run([*self.prefix, str(self.pg_ctl), "--pgdata", str(self.data), "--log",  # noqa: S603
                        str(self.dir / "server.log"), "--mode", "fast", "--wait", "--timeout", "60", "restart"],
                       check=True, capture_output=True)


class Sender(threading.Thread):
    """Posts its batches one after another; a batch without an answer is sent again."""

    def __init__(self, name: str, url: str, key: str, accounts: list[str], stop: threading.Event):
        super().__init__(daemon=True)
        self.prefix, self.url, self.key, self.accounts, self.stop = name, url, key, accounts, stop
        self.answers: dict[str, str] = {}
        self.sent: list[dict] = []
        self.batches_done = 0
        self.failures: list[str] = []
        self.error: BaseException | None = None

    def batch(self, number: int) -> list[dict]:
        return [{"id": f"{self.prefix}-{number}-{i}", "type": "usage.charged",
                 "account": self.accounts[i % len(self.accounts)], "occurred_at": at(1, hours=number).isoformat(),
                 "amount": f"{1 + i % 9}.{(number * 7 + i) % 100:02d}", "product": "pods"}
                for i in range(BATCH)]

    def post(self, events: list[dict]) -> dict:
        request = urllib.request.Request(  # noqa: S310 - our own local server
            f"{self.url}/api/v1/events", data=json.dumps({"events": events}).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"})
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - our own local server
            return json.load(response)

    def run(self):
        try:
            number = 0
            while not self.stop.is_set() and number < 40:
                events = self.batch(number)
                self.sent += events
                for _attempt in range(100):
                    try:
                        body = self.post(events)
                        break
                    except (OSError, urllib.error.URLError, ValueError) as exc:  # reset, refused, 5xx, bad JSON
                        self.failures.append(f"batch {number}: {type(exc).__name__}: {exc}")
                        time.sleep(0.2)
                else:
                    raise AssertionError(f"batch {number} never answered: {self.failures[-3:]}")
                for result in body["results"]:
                    self.answers[result["id"]] = result["status"]
                self.batches_done += 1
                number += 1
        except BaseException as exc:  # reported by the test
            self.error = exc


def _mid_transaction_worker_pids() -> list[int]:
    """Gunicorn workers whose database session is inside a transaction that has written (a batch
    being stored and applied: nothing of it is committed yet)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'fault-worker-%%' "
                       "AND state IN ('active', 'idle in transaction') AND backend_xid IS NOT NULL")
        return [int(name.rsplit("-", 1)[1]) for (name,) in cursor.fetchall()]


def test_killed_worker_and_restarted_database_lose_no_accepted_event(tmp_path):
    cluster = Cluster()
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(GUNICORN_CONFIG)
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "referrals_site.settings",
           "CELERY_TASK_ALWAYS_EAGER": "true", "CELERY_BROKER_URL": "memory://", "REDIS_URL": "",
           "API_THROTTLE_REDIS_URL": "", "API_RATE_LIMIT": "1000000/minute",
           # Each batch stored and applied in one transaction inside its request (the default).
           "INGEST_INLINE_APPLY_MAX": "1000"}
    log = open(tmp_path / "gunicorn.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(  # noqa: S603 - our own fixed command line
        [GUNICORN, "referrals_site.wsgi", "-c", str(config), "--bind", f"127.0.0.1:{port}", "--workers", "2",
         "--timeout", "60", "--log-level", "warning"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    senders = []
    try:
        # Data while the server boots.
        load_preset("runpod")
        code = signup("fault-ref", when=at(0)).referral_code
        accounts = [f"fault-{i}" for i in range(ACCOUNTS)]
        for name in accounts:
            signup(name, code=code, when=at(0))
        key = api_key_create(name="fault-test", scopes=["events:write"])[1]
        senders = [Sender(f"f{n}", url, key, accounts[n::2], stop) for n in range(2)]

        def serves():
            try:
                with urllib.request.urlopen(f"{url}/health/", timeout=2) as response:  # noqa: S310 - local
                    return response.status == 200
            except OSError:
                return False

        wait_until(serves, timeout=30, what="gunicorn to serve", every=0.2)
        for sender in senders:
            sender.start()

        # 1. A worker is killed inside the transaction that stores and applies its batch.
        killed = wait_until(lambda: _mid_transaction_worker_pids()[:1], timeout=30, every=0.005,
                            what="a worker storing and applying a batch")[0]
        os.kill(killed, signal.SIGKILL)
        after_kill = [s.batches_done for s in senders]

        # 2. PostgreSQL restarts while both clients keep sending (the master has forked a new worker).
        wait_until(lambda: all(s.batches_done > n for s, n in zip(senders, after_kill, strict=True)),
              timeout=60, what="batches answered after the kill")
        connection.close()
        cluster.restart()
        after_restart = [s.batches_done for s in senders]
        wait_until(lambda: all(s.batches_done > n or s.error for s, n in zip(senders, after_restart, strict=True)),
              timeout=60, what="batches answered after the restart")
    finally:
        stop.set()
        for sender in senders:
            sender.join(timeout=90)
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()
    connection.close()
    errors = [s.error for s in senders if s.error]
    assert not errors, f"{errors}; server log: {(tmp_path / 'gunicorn.log').read_text()[-3000:]}"
    failures = [f for s in senders for f in s.failures]
    assert failures, "the kill and the restart cost some requests their answer (retried)"

    answered = {i: status for s in senders for i, status in s.answers.items()}
    sent = {event["id"]: event for s in senders for event in s.sent}
    assert set(answered) == set(sent), "every batch was answered in the end"
    assert set(answered.values()) <= {"accepted", "duplicate"}, answered
    stored = set(Event.objects.filter(external_id__in=list(sent)).values_list("external_id", flat=True))
    assert stored == set(sent), "every answered id is stored"

    left = Event.objects.filter(external_id__in=list(sent), applied_at__isnull=True).count()
    assert sweeper.sweep() == left
    assert not Event.objects.filter(external_id__in=list(sent), applied_at__isnull=True).exists()

    # Exactly once: each referred account's spend is the sum of its events, not more.
    expected: dict[str, int] = {}
    for event in sent.values():
        expected[event["account"]] = expected.get(event["account"], 0) + to_units(event["amount"])
    assert dict(Referral.objects.filter(referred__external_id__in=accounts)
                .values_list("referred__external_id", "spend")) == expected
    assert sweeper.lag()["unapplied"] == 0
    assert verify() == []
    print(f"fault test: {len(sent)} events, {len(failures)} failed requests retried, {left} left unapplied "
          f"and swept, at {timezone.now().isoformat()}")
