"""A run of sign-ups (`account.created`) is applied set-based (referrals.engine.signups) exactly as the
step applies them one by one: the same accounts, referrals, fraud flags, sign-up credits,
ledger, balances, rollups, event rows and outbox messages; duplicates and bad codes are decided
as the step decides them; and a batch costs the same number of queries whatever its size."""
import itertools
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ledger.models import Balance
from ledger.models import Transaction as LedgerTransaction
from referrals.engine import apply as engine
from referrals.engine import events as ev
from referrals.engine import outbox
from referrals.engine.ingestion import apply_pending
from referrals.engine.services import ingest_event
from referrals.engine.verification import check_integrity, replay_differences
from referrals.models import Account, Accrual, Click, CreditGrant, Event, FraudFlag, Referral
from tests.helpers import applied_rolled_back, at, event, fail_once, published, signup, store
from tests.test_apply_setbased import rollups_now


@pytest.fixture
def predictable_codes(monkeypatch):
    """Referral codes drawn from a sequence (restarted by `restart()`), so that a sign-up can
    name the code of an account that an earlier sign-up of the same batch opens."""
    field = Account._meta.get_field("referral_code")
    counter = {"codes": None}

    def restart():
        counter["codes"] = (f"code{n:04d}" for n in itertools.count())

    restart()
    monkeypatch.setattr(field, "_get_default", lambda: next(counter["codes"]))
    return restart


@pytest.fixture
def step_calls(count_step_calls):
    """The sign-ups the step applied (the rest went set-based)."""
    return count_step_calls(ev.ACCOUNT_CREATED)


def snapshot(callbacks) -> dict:
    """Everything applying sign-ups writes, with accounts named by external id and referrals by
    their referred account (PostgreSQL's sequences move on between two rolled-back attempts)."""
    names = dict(Account.objects.values_list("id", "external_id"))
    referred = {pk: names[a] for pk, a in Referral.objects.values_list("id", "referred_id")}
    accruals = {row[0]: (row[1], row[2], row[3], names[row[4]], row[5], referred.get(row[6]), *row[7:])
                for row in Accrual.objects.order_by("id").values_list(
                    "id", "program_id", "program_version", "rule", "beneficiary_id", "event_id", "referral_id",
                    "amount", "destination", "state", "held_for_fraud", "expires_days", "created_at", "released_at")}
    ledger = []
    for txn in LedgerTransaction.objects.order_by("id").prefetch_related("entries"):
        legs = [(names.get(e.account_id), e.book, e.program_id, e.amount) for e in txn.entries.order_by("id")]
        ledger.append((txn.kind, txn.rule, txn.event_id, legs))
    messages = []
    for kind, account_id, data in published(callbacks):
        data = dict(data)
        if "referral" in data:
            data["referral"] = referred[data["referral"]]
        if "accrual" in data:
            data["accrual"] = accruals[data["accrual"]]
        messages.append((kind, names[account_id], sorted(data.items())))

    def rollup_rows(rows):
        return sorted(((names.get(row[0], row[0]), *row[1:]) for row in rows), key=repr)

    return {
        "accounts": list(Account.objects.order_by("id").values_list(
            "external_id", "email", "email_normalized", "referral_code", "code_enabled", "track", "signup_ip",
            "device_id", "purchased_credits", "signed_up_at")),
        "referrals": [(names[r], names[d], c, t, s, why, when) for r, d, c, t, s, why, when in
                      Referral.objects.order_by("id").values_list(
                          "referrer_id", "referred_id", "click_id", "template_id", "status", "ineligible_reason",
                          "created_at")],
        "flags": [(referred[r], s, st) for r, s, st in
                  FraudFlag.objects.order_by("id").values_list("referral_id", "signals", "status")],
        "accruals": list(accruals.values()),
        "grants": [(names[a], *rest) for a, *rest in CreditGrant.objects.order_by("id").values_list(
            "account_id", "amount", "remaining", "expires_at", "expired_at")],
        "ledger": ledger,
        "balances": sorted((names[a], b, amount) for a, b, amount in
                           Balance.objects.values_list("account_id", "book", "amount")),
        "events": [(x, names.get(a), w, err, applied is None) for x, a, w, err, applied in
                   Event.objects.order_by("id").values_list("external_id", "account_id", "warnings", "apply_error",
                                                            "applied_at")],
        "messages": messages,
        "rollups": {table: rollup_rows(rows) for table, rows in rollups_now().items()},
    }


def applied_in_batches(settings, capture, size: int, step_calls: list) -> tuple[dict, int, list]:
    # The replay applies the same runs set-based.
    return applied_rolled_back(settings, capture, size, step_calls, snapshot=snapshot)


def a_history_of_sign_ups(settings) -> list[str]:
    """Referrers already signed up, then a stored batch of sign-ups that exercises every
    decision of the step; returns the ids the step must take itself."""
    settings.REFERRAL = {**settings.REFERRAL, "CLICK_BURST_COUNT": 5, "CLICK_BURST_MINUTES": 10}
    alice = signup("alice", email="alice.smith@gmail.com", ip="203.0.113.7", device_id="dev-1")
    carol = signup("carol", ip="2001:db8::1")
    dora = signup("dora")
    Account.objects.filter(pk=dora.pk).update(code_enabled=False)
    assert ingest_event(event("template.published", "alice", id="t-0", template="tpl")).status == "accepted"
    click = Click.objects.create(referrer=carol, visitor_id="v1", created_at=at(1))
    Click.objects.bulk_create([Click(referrer=carol, visitor_id=f"b{i}", created_at=at(3) - timedelta(minutes=i))
                               for i in range(6)])
    # bob's code, drawn when bob is opened in the batch: code0003 (alice, carol, dora first).
    bob_code = "code0003"
    batch = [
        event("account.created", "bob", id="s-1", when=at(1), email="bob@example.com",
              referral_code=alice.referral_code, ip="::ffff:198.51.100.4"),
        event("account.created", "eve", id="s-2", when=at(1), email="AliceSmith+2@gmail.com",
              referral_code=alice.referral_code.upper()),
        event("account.created", "dan", id="s-3", when=at(1), email="dan@example.com",
              referral_code=alice.referral_code, ip="203.0.113.7", device_id="dev-1"),
        event("account.created", "fay", id="s-4", when=at(1), email="fay@example.com", referral_code="nosuch12"),
        event("account.created", "bob", id="s-5", when=at(1), email="bob2@example.com"),  # twice in the batch
        event("account.created", "alice", id="s-6", when=at(1), email="alice2@example.com"),  # exists already
        event("account.created", "gus", id="s-7", when=at(2), email="gus@example.com", template="tpl"),
        event("account.created", "hal", id="s-8", when=at(2), email="hal@example.com", template="nosuch"),
        event("account.created", "ivy", id="s-9", when=at(2), email="ivy@example.com", referral_code=bob_code,
              ip="::ffff:198.51.100.4"),  # referred by bob, opened earlier in this batch, from bob's IP
        event("account.created", "jon", id="s-10", when=at(2), email="jon@mailinator.com",
              referral_code=carol.referral_code, ip="2001:db8:0::1"),
        event("account.created", "kim", id="s-11", when=at(2), email="kim@example.com", click_id=str(click.pk)),
        event("account.created", "lea", id="s-12", when=at(2), email="lea@example.com",
              referral_code=dora.referral_code),
        event("account.created", "max", id="s-13", when=at(3), email="max@example.com",
              referral_code=carol.referral_code),  # after a burst of clicks on carol's link
        event("account.created", "ned", id="s-14", when=at(3), email="ned@example.com",
              referral_code=12345678),  # not a string: ignored with a warning by validation
        event("account.created", "oli", id="s-15", when=at(4), email="oli@example.com"),
    ]
    for raw in batch:
        store(raw)
    return ["s-5", "s-6", "s-8"]


def test_it_applies_a_batch_of_sign_ups_as_the_step_applies_them_one_by_one(
        apimarket, settings, predictable_codes, step_calls, django_capture_on_commit_callbacks):
    stepped = a_history_of_sign_ups(settings)
    states, applied = {}, {}
    for size in (1, 7, 1000):
        predictable_codes()
        for _ in range(3):  # alice, carol and dora drew the first three
            Account._meta.get_field("referral_code").get_default()
        states[size], applied[size], calls = applied_in_batches(
            settings, django_capture_on_commit_callbacks, size, step_calls)
        if size == 1000:
            assert calls == stepped
    for part in states[1]:
        assert states[1][part] == states[7][part] == states[1000][part], part
    assert applied == {1: 12, 7: 12, 1000: 12}  # all but the three rejected

    state = states[1000]
    referrals = {referred: (referrer, status, why) for referrer, referred, _, _, status, why, _ in state["referrals"]}
    assert referrals == {
        "bob": ("alice", "pending", ""),
        "eve": ("alice", "ineligible", "same e-mail as the referrer"),
        "dan": ("alice", "ineligible", "same sign-up IP as the referrer; same device as the referrer"),
        "gus": ("alice", "pending", ""),
        "ivy": ("bob", "ineligible", "same sign-up IP as the referrer"),
        "jon": ("carol", "ineligible", "same sign-up IP as the referrer; disposable e-mail domain"),
        "kim": ("carol", "pending", ""),
        "max": ("carol", "ineligible", "burst of clicks on the link"),
    }
    events = {x: (account, warnings, error) for x, account, warnings, error, _ in state["events"]}
    assert events["s-4"][1][0]["field"] == "referral_code" and events["s-4"][1][0]["code"] == "unknown_code"
    assert events["s-12"][1][0]["code"] == "disabled_code"
    assert events["s-14"][1][0]["code"] == "malformed_code"
    assert events["s-5"][2] == "EventRejected: account: account already exists; only new accounts can be referred"
    assert events["s-6"][2].startswith("EventRejected: account: account already exists")
    assert events["s-8"][2] == "EventRejected: template: unknown template 'nosuch'"
    assert [kind for kind, *_ in state["messages"]].count(outbox.REFERRAL_CREATED) == 8


def test_it_rejects_the_second_sign_up_of_an_account_in_one_batch_and_goes_on(apimarket, step_calls):
    alice = signup("alice")
    for n, name in enumerate(["bob", "carol", "bob", "dan", "erin"]):
        store(event("account.created", name, id=f"d-{n}", when=at(1), referral_code=alice.referral_code,
                    email=f"{name}{n}@example.com"))
    step_calls.clear()

    assert apply_pending() == 4

    assert step_calls == ["d-2"]  # bob and carol set-based, the second bob by its step, then dan and erin
    assert Event.objects.get(external_id="d-2").apply_error.startswith("EventRejected: account: account already")
    assert Account.objects.get(external_id="bob").email == "bob0@example.com"
    assert set(Referral.objects.values_list("referred__external_id", flat=True)) == {"bob", "carol", "dan", "erin"}
    assert check_integrity() == [] and replay_differences() == []


def test_a_batch_of_one_still_answers_a_duplicate_sign_up_rejected(db):
    signup("alice")
    first = store(event("account.created", "bob", id="one-1", when=at(1), email="b@example.com"))
    second = store(event("account.created", "bob", id="one-2", when=at(1), email="b@example.com"))
    with pytest.raises(engine.EventRejected) as rejected:
        engine.apply_events([first, second], on_error=None)
    assert rejected.value.code == "account_exists" and rejected.value.fields == {
        "account": "account already exists; only new accounts can be referred"}


def test_it_accepts_a_sign_up_with_an_unknown_code_in_a_batch_unattributed_with_a_warning(apimarket, step_calls):
    alice = signup("alice")
    store(event("account.created", "bob", id="u-1", when=at(1), email="b@example.com", referral_code="zzzz9999"))
    store(event("account.created", "carol", id="u-2", when=at(1), email="c@example.com",
                referral_code=alice.referral_code))
    step_calls.clear()

    assert apply_pending() == 2

    assert step_calls == []
    bob = Event.objects.get(external_id="u-1")
    assert bob.account == Account.objects.get(external_id="bob")
    assert bob.warnings == [{"field": "referral_code", "code": "unknown_code",
                             "message": "unknown referral code 'zzzz9999'; the account is not attributed"}]
    assert not Referral.objects.filter(referred=bob.account).exists()
    assert Referral.objects.get(referred__external_id="carol").referrer == alice
    assert check_integrity() == [] and replay_differences() == []


def queries_for(n: int, alice: Account) -> int:
    for i in range(n):
        store(event("account.created", f"q{n}-{i}", id=f"q{n}-{i}", when=at(1), email=f"q{i}@example.com",
                    referral_code=alice.referral_code, ip="203.0.113.7" if i % 3 == 0 else f"198.51.100.{i % 250}"))
    with CaptureQueriesContext(connection) as queries:
        assert apply_pending() == n
    assert Referral.objects.filter(referred__external_id__startswith=f"q{n}-", status="ineligible").count() == (
        n + 2) // 3
    return len(queries)


def test_a_batch_of_sign_ups_costs_the_same_number_of_queries_whatever_its_size(apimarket, step_calls):
    alice = signup("alice", ip="203.0.113.7")
    # SQLite takes at most 999 parameters per statement: Django splits bulk inserts of more
    # rows than that (e.g. 84 accounts), so there the sizes compared stay below it.
    large = 100 if connection.vendor == "postgresql" else 40
    step_calls.clear()
    assert queries_for(10, alice) == queries_for(large, alice)
    assert step_calls == []


def test_it_flags_a_sign_up_from_the_referrers_ipv4_mapped_address_live_as_its_replay_does(vast):
    alice = signup("alice", ip="::ffff:198.51.100.4")
    bob = signup("bob", code=alice.referral_code, when=at(1), ip="::ffff:198.51.100.4")
    assert Referral.objects.get(referred=bob).ineligible_reason == "same sign-up IP as the referrer"
    assert replay_differences() == []


def test_a_run_that_fails_as_a_whole_is_applied_one_by_one(apimarket, monkeypatch, step_calls, caplog):
    alice = signup("alice")
    store(event("account.created", "bob", id="f-1", when=at(1), email="b@example.com", referral_code="zzzz9999"))
    store(event("account.created", "carol", id="f-2", when=at(1), email="c@example.com",
                referral_code=alice.referral_code))
    store(event("account.created", "dan", id="f-3", when=at(1), email="d@example.com",
                referral_code=alice.referral_code))
    fail_once(monkeypatch, outbox, "publish_many")
    step_calls.clear()

    assert apply_pending() == 3

    assert "set-based run of sign-ups failed" in caplog.text
    assert step_calls == ["f-1"]  # then f-2 and f-3 set-based again
    assert Event.objects.get(external_id="f-1").warnings == [
        {"field": "referral_code", "code": "unknown_code",
         "message": "unknown referral code 'zzzz9999'; the account is not attributed"}]
    assert set(Referral.objects.values_list("referred__external_id", flat=True)) == {"carol", "dan"}
    assert Account.objects.filter(external_id__in=["bob", "carol", "dan"]).count() == 3
    assert check_integrity() == [] and replay_differences() == []
