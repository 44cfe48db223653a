"""Nothing accepted is left unapplied (issue 13.2): a real process killed with SIGKILL in the
middle of applying a 1,000-event batch, then the sweeper applies the rest, exactly once.

PostgreSQL only: the killed process and the sweepers share the test's database (transactional
test, committed rows), which an in-memory SQLite copy cannot.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Count, Sum
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from referrals.engine import sweeper
from referrals.engine.verification import unapplied_events, verify
from referrals.management.commands.setup_schedules import SWEEPER, setup_schedules
from referrals.models import Accrual, Event, Referral
from referrals.presets import load_preset
from referrals.tasks import sweep_unapplied
from tests.helpers import at, event, signup

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.django_db(transaction=True)

# The process under test: store one batch through the API's entry point, then apply it after
# commit (a batch above INGEST_INLINE_APPLY_MAX is handed to the apply task, eager here).
INGEST = """
import json, sys, django
django.setup()
from referrals.engine import ingestion
raws = json.load(open(sys.argv[1]))
results = ingestion.ingest_batch(raws)
print(json.dumps([r.status for r in results]), flush=True)
"""
SWEEP = """
import sys, django
django.setup()
from referrals.engine import sweeper
print(sweeper.sweep(round_size=int(sys.argv[1])), flush=True)
"""


def database_url() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def python(script: str, *args: str, log, **settings) -> subprocess.Popen:
    env = {**os.environ, **settings, "DATABASE_URL": database_url(),
           "DJANGO_SETTINGS_MODULE": "referrals_site.settings",
           "CELERY_TASK_ALWAYS_EAGER": "true", "CELERY_BROKER_URL": "memory://"}
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, env=env,  # noqa: S603 - fixed
                            stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)


@pytest.fixture
def pg(db):
    if connection.vendor != "postgresql":
        pytest.skip(reason="needs PostgreSQL shared with the killed process: set DATABASE_URL (CI's PostgreSQL pass)")


def _accounts(n_referred: int) -> list[str]:
    load_preset("runpod")
    code = signup("ref-a", when=at(0)).referral_code
    names = [f"cust-{i}" for i in range(n_referred)]
    for name in names:
        signup(name, code=code, when=at(0))
    return names


def _batch(names: list[str], size: int) -> list[dict]:
    # Spread over the accounts, a few per account, pods and serverless (a milestone programme).
    return [event("usage.charged", names[i % len(names)], id=f"kill-{i}", when=at(1, hours=i / 100),
                  amount=f"{1 + i % 7}.{i % 100:02d}", product="serverless" if i % 3 else "pods")
            for i in range(size)]


def _expected_spend(raws: list[dict]) -> dict[str, int]:
    from ledger.money import to_units
    spend: dict[str, int] = {}
    for raw in raws:
        spend[raw["account"]] = spend.get(raw["account"], 0) + to_units(raw["amount"])
    return spend


def test_a_process_killed_mid_batch_leaves_events_the_sweeper_applies_exactly_once(pg, tmp_path):
    names = _accounts(20)
    raws = _batch(names, 1000)
    path = tmp_path / "batch.json"
    path.write_text(json.dumps(raws))
    log = open(tmp_path / "ingest.log", "w")  # noqa: SIM115 - closed below
    # The batch is stored, then applied by the task (a batch above INGEST_INLINE_APPLY_MAX), in
    # transactions of APPLY_BATCH_MAX events: small ones here, so the kill lands between committed
    # parts of the apply, not before the first or after the last. (A batch applied in its
    # request is stored and applied in one transaction: a kill leaves nothing of it.)
    proc = python(INGEST, str(path), log=log, APPLY_BATCH_MAX="20", INGEST_INLINE_APPLY_MAX="0")
    batch = Event.objects.filter(external_id__startswith="kill-")
    deadline = time.monotonic() + 60
    # Killed once the batch is stored and its apply is under way (about 0.3 s into it).
    while time.monotonic() < deadline and proc.poll() is None:
        if batch.count() == 1000 and batch.filter(applied_at__isnull=False).exists():
            break
        time.sleep(0.02)
    time.sleep(0.3)
    assert proc.poll() is None, f"the batch was applied before the kill; log: {(tmp_path / 'ingest.log').read_text()}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    log.close()

    # The killed session's transaction is rolled back by the server: wait until it is gone.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid()")
            if cursor.fetchone()[0] == 0:
                break
        time.sleep(0.1)
    stored, applied = batch.count(), batch.filter(applied_at__isnull=False).count()
    assert stored == 1000, "every event of the batch was committed before applying began"
    assert 0 < applied < 1000, f"killed mid-batch: {applied} of 1000 applied"
    assert any(f"{1000 - applied} accepted event(s) not applied yet" in p for p in unapplied_events())
    lag = sweeper.lag()
    assert lag["unapplied"] == 1000 - applied and lag["oldest_unapplied_age_seconds"] >= 0

    # Two sweepers at once, in their own processes, small rounds so they overlap on accounts.
    sweep_log = open(tmp_path / "sweep.log", "w")  # noqa: SIM115 - closed below
    sweepers = [python(SWEEP, "200", log=sweep_log) for _ in range(2)]
    counts = [int(p.communicate(timeout=120)[0].strip() or -1) for p in sweepers]
    sweep_log.close()
    assert all(p.returncode == 0 for p in sweepers), (tmp_path / "sweep.log").read_text()
    assert sum(counts) == 1000 - applied, f"each event applied by exactly one sweeper: {counts}"
    assert not batch.filter(applied_at__isnull=True).exists()

    # Applied once each: spend per referred account is exactly the batch's, one revenue-share
    # accrual per event, and replaying the log gives the same ledger.
    expected = _expected_spend(raws)
    stored_spend = dict(Referral.objects.filter(referred__external_id__in=expected)
                        .values_list("referred__external_id", "spend"))
    assert stored_spend == expected
    per_event = Accrual.objects.filter(event__external_id__startswith="kill-", rule__contains="revenue-share") \
        .values("event").annotate(n=Count("id"))
    assert per_event.count() == 1000 and {row["n"] for row in per_event} == {1}
    assert Accrual.objects.filter(event__external_id__startswith="kill-", rule__contains="revenue-share") \
        .aggregate(total=Sum("amount"))["total"] > 0
    assert sweeper.lag() == {"unapplied": 0, "oldest_unapplied_age_seconds": 0.0}
    assert verify() == []


def test_the_beat_entry_and_run_jobs_apply_what_an_interrupted_apply_left(db, client):
    names = _accounts(3)
    from referrals.engine import ingestion
    # Stored, and then not applied: what a crash between the two steps leaves.
    raws = [event("usage.charged", name, id=f"left-{i}", when=at(2), amount="10.00", product="pods")
            for i, name in enumerate(names * 2)]
    from django.test import override_settings
    with override_settings(INGEST_INLINE_APPLY_MAX=0):
        from unittest import mock

        from django.db import transaction
        # The after-commit apply never happens (the process "died" at commit).
        with mock.patch.object(transaction, "on_commit"):
            assert [r.status for r in ingestion.ingest_batch(raws)] == ["accepted"] * 6
    assert Event.objects.filter(external_id__startswith="left-", applied_at__isnull=True).count() == 6
    body = client.get("/health/").json()
    assert body["checks"]["events"]["unapplied"] == 6 and body["checks"]["events"]["ok"] is True

    # The beat entry exists, every 5 seconds; its task skips events younger than 2 s.
    assert SWEEPER[0] in setup_schedules()
    task = PeriodicTask.objects.get(name=SWEEPER[0])
    assert (task.task, task.interval.every, task.interval.period, task.enabled) == (
        "referrals.sweep_unapplied", 5, "seconds", True)
    left = Event.objects.filter(external_id__startswith="left-")
    left.exclude(external_id__in=["left-0", "left-1"]).update(received_at=timezone.now())  # just stored
    left.filter(external_id__in=["left-0", "left-1"]).update(received_at=at(2))  # stored long ago
    assert sweep_unapplied.apply().get() == 2
    # run_jobs applies the rest before any job runs.
    from referrals.engine.jobs import run_jobs
    run_jobs(at=at(3), names=["release_holds"])
    assert not Event.objects.filter(external_id__startswith="left-", applied_at__isnull=True).exists()
    assert client.get("/health/").json()["checks"]["events"] == {
        "ok": True, "unapplied": 0, "oldest_unapplied_age_seconds": 0.0}
    assert verify() == []
