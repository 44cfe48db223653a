"""A run of refunds (`payment.refunded`) is applied set-based (referrals.engine.refunds) exactly as the
step applies them one by one: the same claw-backs, ledger, balances, referral and account
figures and event rows, and the same again on replay; two refunds of one payment in a batch see
each other, a refund too large is rejected by the step and the rest of the batch goes on; and a
batch costs the same number of queries whatever its size."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ledger.models import Book
from ledger.money import share_of
from ledger.selectors import balances_for
from referrals.engine import bulk, rules
from referrals.engine import events as ev
from referrals.engine.ingestion import apply_pending, ingest_batch
from referrals.engine.jobs import run_jobs
from referrals.engine.services import application_approve
from referrals.engine.verification import check_integrity, replay_differences
from referrals.models import Account, Accrual, Application, Event, Program, Referral
from referrals.presets import load_preset
from tests.helpers import applied_rolled_back, at, buy_credits, buy_plan, event, fail_once, signup, spend, store, usd
from tests.test_apply_setbased import snapshot
from tests.test_ledger_properties import assert_invariants


@pytest.fixture
def step_calls(count_step_calls):
    """The refunds the step applied (the rest went set-based)."""
    return count_step_calls(ev.PAYMENT_REFUNDED)


@pytest.fixture
def three_presets(db):
    for preset in ("runpod", "apimarket", "vast"):
        load_preset(preset)
    Program.objects.filter(key="runpod-revenue-share").update(gate_min_referrals=2, gate_min_spend=10)


def refund(account: str, amount: str, of: str, id: str, when=None) -> dict:
    return event(ev.PAYMENT_REFUNDED, account, id=id, amount=amount, refunds=of, when=when or at(20))


def a_history_with_refunds() -> dict[str, str]:
    """Charges and purchases of several referred accounts applied as they happen (alice's
    revenue share approved, so released; carol's held), then a stored batch of refunds; returns
    the batch's rejected refunds with their reason."""
    alice = signup("alice")
    carol = signup("carol")
    for name, referrer in (("bob", alice), ("dan", alice), ("erin", carol), ("fay", carol)):
        signup(name, code=referrer.referral_code, when=at(1))
    signup("gus")  # not referred
    charges = {
        "bob-pods": spend("bob", "100.00", when=at(2)),
        "bob-serverless": spend("bob", "50.00", product="serverless", when=at(2)),
        "dan-pods": spend("dan", "200.00", when=at(3)),
        "erin-pods": spend("erin", "80.00", when=at(3)),
        "dan-credits": buy_credits("dan", "40.00", when=at(3)),
        "fay-credits": buy_credits("fay", "30.00", when=at(4)),
        "erin-plan": buy_plan("erin", "20.00", when=at(4)),
        "gus-pods": spend("gus", "10.00", when=at(4)),
    }
    run_jobs(at=at(10), names=["revenue_share_gates"])
    for application in Application.objects.filter(status="open", account=alice):
        application_approve(application=application, actor=None)
    assert Accrual.objects.get(event__external_id=charges["bob-pods"]).state == Accrual.State.RELEASED
    assert Accrual.objects.get(event__external_id=charges["erin-pods"]).state == Accrual.State.HELD

    for raw in [
        refund("bob", "30.00", charges["bob-pods"], "r-1"),  # released: from alice's credits
        refund("bob", "70.00", charges["bob-pods"], "r-2"),  # the rest of the same charge, same batch
        refund("dan", "10.00", charges["dan-credits"], "r-3"),  # a credit purchase, partly
        refund("erin", "50.00", charges["erin-pods"], "r-4"),  # held: from carol's pending
        refund("erin", "40.00", charges["erin-pods"], "r-5"),  # more than the $30 left: rejected
        refund("fay", "30.00", charges["fay-credits"], "r-6"),  # a credit purchase in full
        refund("gus", "10.00", charges["gus-pods"], "r-7"),  # no referral, no commission
        refund("bob", "5.00", charges["dan-pods"], "r-8"),  # another account's charge: rejected
        refund("dan", "200.00", charges["dan-pods"], "r-9"),
        refund("bob", "0.000001", charges["bob-serverless"], "r-10"),  # less than the share's unit
        refund("erin", "30.00", charges["erin-pods"], "r-11"),  # exactly what is left after r-4
        refund("erin", "7.50", charges["erin-plan"], "r-12"),  # a plan purchase, partly
        refund("dan", "1.00", "no-such-event", "r-13"),  # unknown: rejected
        refund("dan", "30.00", charges["dan-credits"], "r-14"),  # the rest of dan's credits
        refund("bob", "49.999999", charges["bob-serverless"], "r-15"),  # the rest, with r-10
    ]:
        store(raw)
    return {
        "r-5": "EventRejected: amount: is larger than what is left to refund (30.00)",
        "r-8": "EventRejected: refunds: belongs to a different account",
        "r-13": "EventRejected: refunds: unknown event 'no-such-event'",
    }


def extras() -> dict:
    """What `snapshot` leaves out of a refund's writes: which event each one refunds, the
    referrals' spend per product, and the errors of the rejected ones."""
    return {
        "refunds": sorted(Event.objects.filter(refunds__isnull=False).values_list("external_id",
                                                                                   "refunds__external_id")),
        "by_product": sorted((r.referred.external_id, sorted(r.spend_by_product.items()))
                             for r in Referral.objects.select_related("referred")),
        "errors": dict(Event.objects.exclude(apply_error="").values_list("external_id", "apply_error")),
    }


def applied_in_batches(settings, capture, size: int, step_calls: list) -> tuple[dict, int, list]:
    """Apply the stored refunds in batches of `size`, rolled back: what it wrote, how many were
    applied and which the step took; the replay must rebuild the same state."""
    return applied_rolled_back(settings, capture, size, step_calls, check=assert_invariants,  # exact claw-backs too
                               snapshot=lambda callbacks: {**snapshot(callbacks), **extras()})


def test_it_applies_a_batch_of_refunds_as_the_step_applies_them_one_by_one(
        three_presets, settings, stored_only, step_calls, django_capture_on_commit_callbacks):
    rejected = a_history_with_refunds()
    states, applied, stepped = {}, {}, {}
    for size in (1, 4, 1000):
        states[size], applied[size], stepped[size] = applied_in_batches(
            settings, django_capture_on_commit_callbacks, size, step_calls)
    for part in states[1]:
        assert states[1][part] == states[4][part] == states[1000][part], part
    assert applied == {1: 12, 4: 12, 1000: 12}
    assert len(stepped[1]) == 15
    # In one batch the step takes only the refunds it rejects; each ends a run, the next starts one.
    assert stepped[1000] == ["r-5", "r-8", "r-13"]
    assert states[1000]["errors"] == rejected

    settings.APPLY_BATCH_MAX = 1000
    assert apply_pending() == 12
    alice, carol = (Account.objects.get(external_id=name) for name in ("alice", "carol"))
    # All of alice's referred payments refunded in full: her commission is all clawed back,
    # from the books it had been released to; carol's revenue share, still held, from pending.
    assert sum(balances_for(alice.pk)[book] for book in (Book.PENDING, Book.CREDITS, Book.CASH)) == 0
    assert Accrual.objects.filter(beneficiary=carol, program__key="runpod-revenue-share").get().net == 0
    for accrual in Accrual.objects.filter(program__kind__in=rules.RATE_KINDS).select_related("event"):
        assert accrual.reversed == share_of(accrual.amount, accrual.event.refunded, accrual.event.amount)
    plan = Accrual.objects.get(event__type=ev.PLAN_PURCHASED)
    assert 0 < plan.reversed < plan.amount
    referrals = {r.referred.external_id: r for r in Referral.objects.select_related("referred")}
    assert referrals["bob"].spend == 0 and referrals["bob"].spend_by_product == {"pods": 0, "serverless": 0}
    assert referrals["erin"].spend == 0 and referrals["erin"].purchases == usd("12.50")
    assert referrals["dan"].purchases == referrals["fay"].purchases == 0
    assert Account.objects.get(external_id="dan").purchased_credits == 0
    assert Event.objects.get(external_id="r-2").refunds.refunded == usd("100.00")


def test_two_refunds_of_one_charge_in_a_batch_claw_back_in_total_what_one_would(
        runpod, stored_only, step_calls):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    charge = spend("bob", "33.33", when=at(2))
    store(refund("bob", "11.11", charge, "t-1"))
    store(refund("bob", "22.22", charge, "t-2"))
    step_calls.clear()

    assert apply_pending() == 2

    assert step_calls == []
    accrual = Accrual.objects.get(event__external_id=charge)
    assert accrual.reversed == accrual.amount
    assert balances_for(alice.pk)[Book.PENDING] == 0
    assert Event.objects.get(external_id=charge).refunded == usd("33.33")
    assert check_integrity() == [] and replay_differences() == []


def test_a_run_of_refunds_that_fails_as_a_whole_is_applied_one_by_one(
        runpod, stored_only, monkeypatch, step_calls, caplog):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    charge = spend("bob", "100.00", when=at(2))
    for n in range(3):
        store(refund("bob", "10.00", charge, f"f-{n}"))
    fail_once(monkeypatch, bulk, "post_each")
    step_calls.clear()

    assert apply_pending() == 3

    assert "set-based run of refunds failed" in caplog.text
    assert step_calls == ["f-0"]  # then f-1 and f-2 set-based again
    assert Event.objects.get(external_id=charge).refunded == usd("30.00")
    assert sorted(Event.objects.filter(refunds__external_id=charge).values_list("external_id", flat=True)) == [
        "f-0", "f-1", "f-2"]
    assert Accrual.objects.get(event__external_id=charge).reversed == usd("0.60")
    assert check_integrity() == [] and replay_differences() == []


def queries_for(n: int, charges: list[str], accounts: list[str]) -> int:
    for i in range(n):
        store(refund(accounts[i % len(accounts)], "0.01", charges[i % len(charges)], f"q{n}-{i}"))
    with CaptureQueriesContext(connection) as queries:
        assert apply_pending() == n
    assert not Event.objects.exclude(apply_error="").exists()
    return len(queries)


def test_a_batch_of_refunds_costs_the_same_number_of_queries_whatever_its_size(
        runpod, vast, stored_only, step_calls):
    alice = signup("alice")
    accounts = [f"acct-{n}" for n in range(5)]
    for name in accounts:
        signup(name, code=alice.referral_code, when=at(1))
    raws = [event(ev.USAGE_CHARGED if i % 2 else ev.CREDITS_PURCHASED, accounts[i % 5], id=f"c-{i}", when=at(2),
                  amount="10.00", **({"product": "pods"} if i % 2 else {})) for i in range(20)]
    ingest_batch(raws)
    apply_pending()
    charges = [raw["id"] for raw in raws]
    step_calls.clear()
    # Each refund one ledger transaction of two legs: 50 of them stay below SQLite's limit of
    # 999 parameters per statement, so no bulk insert is split there either.
    assert queries_for(10, charges, accounts) == queries_for(50, charges, accounts)
    assert step_calls == []
    assert check_integrity() == [] and replay_differences() == []
