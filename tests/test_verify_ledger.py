"""verify_ledger: the ledger balances, matches its projection and replays to the same state."""
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from ledger.models import Balance, Book
from referrals.engine.jobs import run_jobs
from referrals.engine.services import application_approve
from referrals.engine.verification import verify
from referrals.models import Application
from tests.helpers import at, event, push, signup, spend


def _history(staff):
    alice = signup("alice")
    for i in range(25):
        signup(f"r{i}", code=alice.referral_code, when=at(1))
        spend(f"r{i}", "30.00", when=at(2), product="serverless")
    spend("r0", "990.00", when=at(3), product="serverless")  # crosses the milestone
    charge = spend("r1", "10.00", when=at(3))
    push(event("payment.refunded", "r1", when=at(4), amount="4.00", refunds=charge))
    run_jobs(at=at(5))
    application_approve(application=Application.objects.get(account=alice), actor=staff)
    spend("r2", "1.23", when=at(6))
    return alice


def test_it_finds_nothing_wrong_after_a_real_history(runpod, staff):
    _history(staff)
    assert verify() == []
    call_command("verify_ledger")


def test_it_exits_non_zero_when_the_projection_drifts(runpod, staff):
    alice = _history(staff)
    Balance.objects.filter(account=alice, book=Book.CREDITS).update(amount=1)
    with pytest.raises(CommandError, match="difference"):
        call_command("verify_ledger")


def test_it_leaves_the_data_untouched_after_replaying(runpod, staff):
    alice = _history(staff)
    before = dict(Balance.objects.filter(account=alice).values_list("book", "amount"))
    verify()
    assert dict(Balance.objects.filter(account=alice).values_list("book", "amount")) == before


def test_it_refuses_to_change_a_posted_entry_on_postgres(runpod, staff, postgres_only):
    from django.db import DatabaseError, transaction

    _history(staff)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE ledger_entry SET amount = amount + 1")


def test_it_refuses_an_unbalanced_transaction_at_commit_on_postgres(runpod, postgres_only):
    from django.db import DatabaseError, transaction

    from ledger.models import Entry, Transaction

    alice = signup("alice")
    with pytest.raises(DatabaseError, match="unbalanced"), transaction.atomic():
        txn = Transaction.objects.create(kind="test")
        Entry.objects.bulk_create([Entry(transaction=txn, account=alice, book=Book.CREDITS, amount=5)])
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
