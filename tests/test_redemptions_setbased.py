"""A run of redemptions (`credits.redeemed`) is applied set-based (referrals.engine.redemptions)
exactly as the step applies them one by one: the same grants, ledger, balances and event rows,
and the same again on replay; two redemptions of one account in a batch see each other, grants
lapsed by a redemption's time are not spendable, a redemption larger than what is spendable is
rejected by the step and the rest of the batch goes on; and a batch costs the same number of
queries whatever its size."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ledger.models import Book
from ledger.selectors import balances_for
from referrals.engine import bulk
from referrals.engine import events as ev
from referrals.engine.ingestion import apply_pending
from referrals.engine.verification import check_integrity, replay_differences
from referrals.models import Account, CreditGrant, Event
from tests.helpers import applied_rolled_back, at, buy_plan, event, fail_once, signup, store, usd
from tests.test_apply_setbased import snapshot


@pytest.fixture
def step_calls(count_step_calls):
    """The redemptions the step applied (the rest went set-based)."""
    return count_step_calls(ev.CREDITS_REDEEMED)


def redeem(account: str, amount: str, id: str, when) -> dict:
    return event(ev.CREDITS_REDEEMED, account, id=id, amount=amount, when=when)


def spendable_message(amount: str) -> str:
    return f"EventRejected: amount: is more than the account's spendable credits ({amount})"


def a_history_with_redemptions() -> dict[str, str]:
    """Referred accounts holding sign-up credit (valid 30 days) and referrers holding commission
    credits (which do not expire), applied as they happen; then a stored batch of redemptions.
    Returns the batch's rejected redemptions with their reason."""
    alice = signup("alice")
    bob = signup("bob", code=alice.referral_code, when=at(1))  # $2.50 until day 31
    dan = signup("dan", code=alice.referral_code, when=at(1))  # $2.50 until day 31
    signup("erin", code=alice.referral_code, when=at(5))  # $2.50 until day 35
    signup("fay", code=alice.referral_code, when=at(1))  # $2.50 until day 31
    signup("gus", code=bob.referral_code, when=at(2))
    signup("hal", code=dan.referral_code, when=at(2))
    buy_plan("bob", "100.00", when=at(2))  # alice: $5.00 of commission credits
    buy_plan("gus", "20.00", when=at(3))  # bob: $1.00
    buy_plan("hal", "40.00", when=at(3))  # dan: $2.00
    assert balances_for(alice.pk)[Book.CREDITS] == usd("5.00")
    assert balances_for(dan.pk)[Book.CREDITS] == usd("4.50")

    for raw in [
        redeem("bob", "1.00", "r-1", at(10)),
        redeem("dan", "3.00", "r-2", at(10)),  # all of its grant, and $0.50 of its commission
        redeem("alice", "4.00", "r-3", at(10)),  # no grant: commission credits
        redeem("bob", "1.00", "r-4", at(12)),  # the same account again: $0.50 of the grant left
        redeem("dan", "3.00", "r-5", at(11)),  # $1.50 left: rejected
        redeem("erin", "2.00", "r-6", at(32)),  # its grant still valid
        redeem("fay", "2.50", "r-7", at(31)),  # its grant lapsed at that very time: rejected
        redeem("nobody", "1.00", "r-8", at(10)),  # unknown account: rejected
        redeem("alice", "1.00", "r-9", at(10)),  # the rest of alice's
        redeem("bob", "1.00", "r-10", at(33)),  # its grant's $0.50 lapsed: the commission only
        redeem("bob", "0.01", "r-11", at(33)),  # nothing spendable left: rejected
        redeem("dan", "1.50", "r-12", at(12)),  # exactly what r-2 left
        redeem("alice", "0.01", "r-13", at(10)),  # nothing left: rejected
    ]:
        store(raw)
    return {
        "r-5": spendable_message("1.50"),
        "r-7": spendable_message("0.00"),
        "r-8": "EventRejected: account: unknown account 'nobody'",
        "r-11": spendable_message("0.00"),
        "r-13": spendable_message("0.00"),
    }


def errors() -> dict:
    return dict(Event.objects.exclude(apply_error="").values_list("external_id", "apply_error"))


def applied_in_batches(settings, capture, size: int, step_calls: list) -> tuple[dict, int, list]:
    """Apply the stored redemptions in batches of `size`, rolled back: what it wrote, how many
    were applied and which the step took; the replay must rebuild the same state."""
    return applied_rolled_back(settings, capture, size, step_calls,
                               snapshot=lambda callbacks: {**snapshot(callbacks), "errors": errors()})


def test_it_applies_a_batch_of_redemptions_as_the_step_applies_them_one_by_one(
        apimarket, settings, stored_only, step_calls, django_capture_on_commit_callbacks):
    rejected = a_history_with_redemptions()
    states, applied, stepped = {}, {}, {}
    for size in (1, 4, 1000):
        states[size], applied[size], stepped[size] = applied_in_batches(
            settings, django_capture_on_commit_callbacks, size, step_calls)
    for part in states[1]:
        assert states[1][part] == states[4][part] == states[1000][part], part
    assert applied == {1: 8, 4: 8, 1000: 8}
    assert len(stepped[1]) == 13
    # In one batch the step takes only the redemptions it rejects; each ends a run.
    assert stepped[1000] == ["r-5", "r-7", "r-8", "r-11", "r-13"]
    assert states[1000]["errors"] == rejected

    settings.APPLY_BATCH_MAX = 1000
    assert apply_pending() == 8
    accounts = {account.external_id: account for account in Account.objects.all()}
    credits = {name: balances_for(account.pk)[Book.CREDITS] for name, account in accounts.items()}
    assert credits["alice"] == credits["dan"] == 0
    assert credits["bob"] == usd("0.50")  # the lapsed rest of its grant, for the expiry job
    assert credits["erin"] == usd("0.50") and credits["fay"] == usd("2.50")
    remaining = {grant.account.external_id: grant.remaining for grant in CreditGrant.objects.select_related("account")}
    assert remaining == {"bob": usd("0.50"), "dan": 0, "erin": usd("0.50"), "fay": usd("2.50"),
                         "gus": usd("2.50"), "hal": usd("2.50")}
    assert check_integrity() == [] and replay_differences() == []


def test_a_run_of_redemptions_that_fails_as_a_whole_is_applied_one_by_one(
        apimarket, stored_only, monkeypatch, step_calls, caplog):
    alice = signup("alice")
    bob = signup("bob", code=alice.referral_code, when=at(1))
    for n in range(3):
        store(redeem("bob", "0.50", f"f-{n}", at(2 + n)))
    fail_once(monkeypatch, bulk, "post_each")
    step_calls.clear()

    assert apply_pending() == 3

    assert "set-based run of redemptions failed" in caplog.text
    assert step_calls == ["f-0"]  # then f-1 and f-2 set-based again
    assert CreditGrant.objects.get(account=bob).remaining == usd("1.00")
    assert balances_for(bob.pk)[Book.CREDITS] == usd("1.00")
    assert check_integrity() == [] and replay_differences() == []


def queries_for(n: int, accounts: list[str]) -> int:
    for i in range(n):
        store(redeem(accounts[i % len(accounts)], "0.01", f"q{n}-{i}", at(2)))
    with CaptureQueriesContext(connection) as queries:
        assert apply_pending() == n
    assert not Event.objects.exclude(apply_error="").exists()
    return len(queries)


def test_a_batch_of_redemptions_costs_the_same_number_of_queries_whatever_its_size(
        apimarket, stored_only, step_calls):
    alice = signup("alice")
    accounts = [f"acct-{n}" for n in range(5)]
    for name in accounts:
        signup(name, code=alice.referral_code, when=at(1))
    step_calls.clear()
    # Each redemption one ledger transaction of two legs: 40 of them stay below SQLite's limit
    # of 999 parameters per statement, so no bulk insert is split there either.
    assert queries_for(10, accounts) == queries_for(40, accounts)
    assert step_calls == []
    assert sum(CreditGrant.objects.values_list("remaining", flat=True)) == 5 * usd("2.50") - 50 * usd("0.01")
    assert check_integrity() == [] and replay_differences() == []
