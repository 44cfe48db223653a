"""PostgreSQL's balance check sums each ledger transaction once, at commit (ledger/0003), all of a
commit's ledger transactions in one call (ledger/0006)."""
import pytest
from django.db import DatabaseError, connection, transaction

from ledger.models import Book, Entry, Transaction
from tests.helpers import signup


def _notes() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM ledger_pending_check")
        return cursor.fetchone()[0]


def _check_now() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def test_a_transaction_of_many_entries_written_by_several_statements_is_checked_once(runpod, postgres_only):
    accounts = [signup(f"acc-{i}") for i in range(3)]
    with transaction.atomic():
        txns = Transaction.objects.bulk_create([Transaction(kind="test") for _ in range(2)])
        # 600 legs for the first transaction over two statements, balanced only after the second.
        Entry.objects.bulk_create([Entry(transaction=txns[0], account=accounts[i % 3], book=Book.CREDITS, amount=7)
                                   for i in range(300)])
        Entry.objects.bulk_create([Entry(transaction=txns[0], account=accounts[i % 3], book=Book.CASH, amount=-7)
                                   for i in range(300)]
                                  + [Entry(transaction=txns[1], account=accounts[0], book=Book.CREDITS, amount=a)
                                     for a in (5, -5)])
        assert _notes() == 2, "one note per ledger transaction, whatever its number of entries and statements"
        _check_now()
        assert _notes() == 0, "each checked once, then forgotten"
    assert Entry.objects.filter(transaction__in=txns).count() == 602


def test_an_unbalanced_transaction_among_balanced_ones_is_refused_at_commit(runpod, postgres_only):
    alice = signup("alice")
    with pytest.raises(DatabaseError, match=r"transaction \d+ is unbalanced by 3 units"), transaction.atomic():
        txns = Transaction.objects.bulk_create([Transaction(kind="test") for _ in range(3)])
        Entry.objects.bulk_create([Entry(transaction=t, account=alice, book=Book.CREDITS, amount=a)
                                   for t in txns for a in (4, -4)]
                                  + [Entry(transaction=txns[1], account=alice, book=Book.CASH, amount=3)])
        _check_now()
    assert not Entry.objects.exists()


def test_a_rolled_back_savepoint_takes_its_notes_with_it(runpod, postgres_only):
    alice = signup("alice")
    with transaction.atomic():
        txn = Transaction.objects.create(kind="test")
        try:
            with transaction.atomic():
                Entry.objects.bulk_create([Entry(transaction=txn, account=alice, book=Book.CREDITS, amount=9)])
                raise RuntimeError("the caller gives up")
        except RuntimeError:
            pass
        assert _notes() == 0
        _check_now()
    assert not Entry.objects.filter(transaction=txn).exists()


def _check_calls() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(SUM(calls), 0) FROM pg_stat_xact_user_functions "
                       "WHERE funcname IN ('ledger_check_commit', 'ledger_check_pending')")
        return cursor.fetchone()[0]


def test_a_commit_checks_all_its_ledger_transactions_in_one_call(runpod, postgres_only):
    accounts = [signup(f"acc-{i}") for i in range(2)]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL track_functions = 'pl'")
        txns = Transaction.objects.bulk_create([Transaction(kind="test") for _ in range(200)])
        for chunk in (txns[:100], txns[100:]):  # two statements
            Entry.objects.bulk_create([Entry(transaction=t, account=account, book=Book.CREDITS, amount=amount)
                                       for t in chunk for account, amount in zip(accounts, (5, -5), strict=True)])
        assert _notes() == 200
        _check_now()
        assert _check_calls() == 1, "one check for the commit, not one per ledger transaction (ledger/0006)"
        assert _notes() == 0


def test_what_is_written_after_a_check_is_checked_again(runpod, postgres_only):
    alice = signup("alice")
    with pytest.raises(DatabaseError, match=r"transaction \d+ is unbalanced by 2 units"), transaction.atomic():
        first, second = Transaction.objects.bulk_create([Transaction(kind="test") for _ in range(2)])
        Entry.objects.bulk_create([Entry(transaction=first, account=alice, book=Book.CREDITS, amount=a)
                                   for a in (1, -1)])
        _check_now()
        Entry.objects.bulk_create([Entry(transaction=second, account=alice, book=Book.CREDITS, amount=2)])
        _check_now()
