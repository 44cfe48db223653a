"""What keeps the writing jobs' row writes cheap (issue 13.4) without changing what they write:
the held-only accrual indexes, room on the pages for HOT updates, and the rollup trigger that
reads each updated accrual once."""
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import F

from referrals.engine import rollups
from referrals.engine.jobs import run_jobs
from referrals.models import Accrual, Program, Referral
from tests.helpers import signup, spend

T0 = datetime(2026, 3, 2, tzinfo=UTC)
needs_postgres = pytest.mark.skipif("connection.vendor != 'postgresql'",
                                    reason="needs PostgreSQL: set DATABASE_URL (make test provisions it)")


@pytest.fixture
def alice(runpod):
    Program.objects.filter(pk=runpod["revenue_share"].pk).update(requires_approval=False, hold_days=7)
    alice = signup("alice", when=T0)
    for name in ("bob", "charlie"):
        signup(name, code=alice.referral_code, when=T0 + timedelta(hours=1))
        spend(name, "100.00", when=T0 + timedelta(days=1))
    return alice


def _rollup_matches_accruals() -> bool:
    return rollups._rollup_sums() == rollups._accrual_sums()


def test_it_keeps_the_rollup_equal_to_the_accruals_through_any_accrual_update(alice):
    held = Accrual.objects.filter(beneficiary=alice, state=Accrual.State.HELD)
    assert held.count() == 2
    rollup_rows = rollups.EarningsRollup.objects.count()
    held.update(held_for_template=True)  # no rolled-up column changes: no delta rows
    assert rollups.EarningsRollup.objects.count() == rollup_rows
    held.update(reversed=F("amount") / 4)
    assert _rollup_matches_accruals()
    bob, charlie = Referral.objects.order_by("id")
    held.filter(referral=bob).update(referral=charlie)  # to another referral: its own lookup
    assert _rollup_matches_accruals()
    Accrual.objects.filter(beneficiary__external_id="bob").update(referral=None)
    assert _rollup_matches_accruals()
    held.update(held_for_template=False)
    run_jobs(at=T0 + timedelta(days=9), names=["release_holds"])
    assert not Accrual.objects.filter(state=Accrual.State.HELD).exists()
    assert _rollup_matches_accruals()


def test_it_indexes_only_held_accruals_by_state(db):
    indexes = {index.name: index for index in Accrual._meta.indexes}
    assert all(index.condition is not None and "state" not in index.fields for index in indexes.values())
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Accrual._meta.db_table)
    assert not any("state" in c["columns"] for c in constraints.values() if c["index"])


@needs_postgres
def test_it_leaves_room_on_the_pages_the_jobs_update_in_place(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, reloptions FROM pg_class WHERE relname IN "
                       "('referrals_accrual', 'referrals_creditgrant', 'ledger_balance')")
        options = dict(cursor.fetchall())
    assert options == {"referrals_accrual": ["fillfactor=90"], "referrals_creditgrant": ["fillfactor=80"],
                       "ledger_balance": ["fillfactor=70"]}
