"""A run of sign-ups (`account.created`) is applied set-based (referrals.engine.signups) exactly as the
step applies them one by one: the same accounts, referrals, fraud flags, sign-up credits,
ledger, balances, rollups, event rows and outbox messages; duplicates and bad codes are decided
as the step decides them; and a batch costs the same number of queries whatever its size."""
import itertools
import types
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ledger.models import Balance
from ledger.models import Transaction as LedgerTransaction
from referrals.attribution import clicks
from referrals.engine import apply as engine
from referrals.engine import events as ev
from referrals.engine import outbox
from referrals.engine.ingestion import apply_pending, ingest_batch
from referrals.engine.services import ingest_event
from referrals.engine.verification import check_integrity, replay_differences
from referrals.models import Account, Accrual, Click, CreditGrant, Event, FraudFlag, Referral
from tests.helpers import applied_rolled_back, at, event, fail_once, one_per_call_rolled_back, published, signup, store
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
    # By public id: a click written from the buffer in a rolled-back attempt gets a new row id.
    click_ids = dict(Click.objects.values_list("id", "public_id"))
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
        "referrals": [(names[r], names[d], click_ids.get(c), t, s, why, when) for r, d, c, t, s, why, when in
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


def same_in_batches_of_1_7_1000(settings, capture, step_calls, predictable_codes, stepped, *, codes_drawn: int):
    """Apply the stored history in batches of 1, 7 and 1000 (each rolled back), check the three
    leave the same state, and return the state of the batch of 1000 and what each applied.
    `codes_drawn`: the referral codes the accounts signed up before the history drew."""
    states, applied = {}, {}
    for size in (1, 7, 1000):
        predictable_codes()
        for _ in range(codes_drawn):
            Account._meta.get_field("referral_code").get_default()
        states[size], applied[size], calls = applied_in_batches(settings, capture, size, step_calls)
        if size == 1000:
            assert calls == stepped
    for part in states[1]:
        assert states[1][part] == states[7][part] == states[1000][part], part
    return states[1000], applied


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
    # alice, carol and dora drew the first three codes
    state, applied = same_in_batches_of_1_7_1000(settings, django_capture_on_commit_callbacks, step_calls,
                                                 predictable_codes, stepped, codes_drawn=3)
    assert applied == {1: 12, 7: 12, 1000: 12}  # all but the three rejected

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


# --------------------------------------------------------------------------- sign-ups with a click


@pytest.fixture
def buffered_click(monkeypatch):
    """`buffered_click(referrer, when)`: a click left in this process's click buffer, as a
    request leaves it, and not written (the buffer of the test, its writer thread never started)."""
    buffer = clicks.ClickBuffer()
    monkeypatch.setattr(buffer, "_start", lambda: None)
    monkeypatch.setattr(clicks, "buffer", buffer)

    def add(referrer: Account, when) -> clicks.PendingClick:
        click = clicks.PendingClick(public_id=uuid.uuid4(), referrer_id=referrer.pk, visitor_id=uuid.uuid4().hex,
                                    ip_hash="", user_agent="Mozilla/5.0", path="/", template_id=None, is_unique=True,
                                    created_at=when)
        buffer.add(click)
        return click

    return add


def a_click(referrer: Account, when) -> Click:
    return Click.objects.create(referrer=referrer, visitor_id=uuid.uuid4().hex, created_at=when)


def a_history_of_sign_ups_with_clicks(buffered_click) -> list[str]:
    """Referrers and their clicks, then a stored batch of sign-ups naming clicks in every way the
    step decides on; returns the ids the step must take itself."""
    alice = signup("alice", email="alice@example.com", ip="203.0.113.7", device_id="dev-1")
    carol = signup("carol")
    dora = signup("dora")
    Account.objects.filter(pk=dora.pk).update(code_enabled=False)
    assert ingest_event(event("template.published", "alice", id="t-0", template="tpl")).status == "accepted"
    of_carol, of_alice, shared, mine = (a_click(carol, at(1)), a_click(alice, at(1)), a_click(carol, at(1)),
                                        a_click(alice, at(1)))
    expired, of_dora, used_before = a_click(carol, at(0)), a_click(dora, at(1)), a_click(alice, at(1))
    signup("pam", click_id=str(used_before.pk), when=at(1))  # a referral names this click already
    waiting = buffered_click(carol, at(1))
    batch = [
        event("account.created", "bob", id="c-1", when=at(1), email="bob@example.com", click_id=str(of_carol.pk)),
        event("account.created", "eve", id="c-2", when=at(1), email="eve@example.com",
              click_id=str(of_alice.public_id)),
        event("account.created", "fay", id="c-3", when=at(1), email="fay@example.com",
              click_id=of_alice.public_id.hex.upper()),  # eve's click again, spelt otherwise
        event("account.created", "gus", id="c-4", when=at(1), email="gus@example.com",
              click_id=str(waiting.public_id)),  # still buffered
        event("account.created", "hal", id="c-5", when=at(1), email="hal@example.com", click_id=str(uuid.uuid4())),
        event("account.created", "ivy", id="c-6", when=at(1), email="ivy@example.com", click_id="not-a-click"),
        event("account.created", "jon", id="c-7", when=at(1), email="jon@example.com", click_id="99999999"),
        event("account.created", "kim", id="c-8", when=at(2), email="kim@example.com",
              referral_code=alice.referral_code, click_id=str(of_carol.pk)),  # carol's click, alice's code
        event("account.created", "lea", id="c-9", when=at(2), email="lea@example.com",
              referral_code=carol.referral_code, click_id=str(shared.pk)),
        event("account.created", "max", id="c-10", when=at(2), email="max@example.com", click_id=str(shared.pk)),
        event("account.created", "ned", id="c-11", when=at(31), email="ned@example.com", click_id=str(expired.pk)),
        event("account.created", "oli", id="c-12", when=at(2), email="oli@example.com", click_id=str(of_dora.pk)),
        event("account.created", "pat", id="c-13", when=at(2), email="pat@example.com", click_id=str(mine.pk),
              ip="203.0.113.7", device_id="dev-1"),  # alice herself, through her own click
        event("account.created", "quy", id="c-14", when=at(2), email="quy@example.com",
              click_id=str(used_before.public_id)),
        event("account.created", "bob", id="c-15", when=at(2), email="bob2@example.com", click_id=str(of_alice.pk)),
        event("account.created", "rex", id="c-16", when=at(2), email="rex@example.com", click_id=12345),
        event("account.created", "sue", id="c-17", when=at(2), email="sue@example.com", template="tpl",
              click_id=str(of_carol.public_id)),
        event("account.created", "tim", id="c-18", when=at(2), email="tim@mailinator.com",
              click_id=str(of_carol.pk)),
    ]
    for raw in batch:
        store(raw)
    return ["c-15"]


def test_it_applies_a_batch_of_sign_ups_with_clicks_as_the_step_applies_them_one_by_one(
        apimarket, settings, predictable_codes, buffered_click, step_calls, django_capture_on_commit_callbacks):
    stepped = a_history_of_sign_ups_with_clicks(buffered_click)
    # alice, carol, dora and pam drew the first four codes
    state, applied = same_in_batches_of_1_7_1000(settings, django_capture_on_commit_callbacks, step_calls,
                                                 predictable_codes, stepped, codes_drawn=4)
    assert applied == {1: 17, 7: 17, 1000: 17}  # all but the second bob

    referrals = {referred: (referrer, click is not None, status, why)
                 for referrer, referred, click, _, status, why, _ in state["referrals"]}
    shared = "click shared by several sign-ups"
    assert referrals == {
        "pam": ("alice", True, "pending", ""),
        "bob": ("carol", True, "pending", ""),
        "eve": ("alice", True, "pending", ""),
        "fay": ("alice", True, "ineligible", shared),
        "gus": ("carol", True, "pending", ""),
        "kim": ("alice", False, "pending", ""),
        "lea": ("carol", True, "pending", ""),
        "max": ("carol", True, "ineligible", shared),
        "pat": ("alice", True, "ineligible", "same sign-up IP as the referrer; same device as the referrer"),
        "quy": ("alice", True, "ineligible", shared),
        "sue": ("carol", True, "ineligible", shared),
        "tim": ("carol", True, "ineligible", f"disposable e-mail domain; {shared}"),
    }
    gus_click = {referred: click for _, referred, click, *_ in state["referrals"]}["gus"]
    assert not Click.objects.filter(public_id=gus_click).exists() and clicks.buffer.find_all({gus_click}), (
        "written by each attempt from the buffer, which keeps it once the attempt is rolled back")
    warned = {x: [(w["field"], w["code"]) for w in warnings or []] for x, _, warnings, _, _ in state["events"]
              if x.startswith("c-")}
    assert {x: codes for x, codes in warned.items() if codes} == {
        "c-5": [("click_id", "unknown_click")], "c-6": [("click_id", "unknown_click")],
        "c-7": [("click_id", "unknown_click")], "c-8": [("click_id", "click_mismatch")],
        "c-11": [("click_id", "click_expired")], "c-12": [("click_id", "disabled_code")],
        "c-16": [("click_id", "malformed_click")]}
    assert [kind for kind, *_ in state["messages"]].count(outbox.REFERRAL_CREATED) == 11
    flags = {referred: [s["signal"] for s in signals] for referred, signals, _ in state["flags"]}
    assert flags["max"] == ["shared_click"] and flags["tim"] == ["disposable_email", "shared_click"]


def queries_with_clicks(n: int, alice: Account, carol: Account, buffered_click) -> int:
    """n sign-ups, by turns through a click named by row id, by public id (from the referrer's
    IP), still buffered, of another referrer than the code (ignored), unknown, or the click of
    the first of the six (shared)."""
    named = []
    for i in range(n):
        if i % 6 == 0:
            click_id = str(a_click(alice, at(1)).pk)
        elif i % 6 == 1:
            click_id = str(a_click(alice, at(1)).public_id)
        elif i % 6 == 2:
            click_id = str(buffered_click(alice, at(1)).public_id)
        elif i % 6 == 3:
            click_id = str(a_click(carol, at(1)).pk)
        elif i % 6 == 4:
            click_id = str(uuid.uuid4())
        else:
            click_id = named[i - 5]
        named.append(click_id)
        store(event("account.created", f"q{n}-{i}", id=f"q{n}-{i}", when=at(1), email=f"q{i}@example.com",
                    referral_code=alice.referral_code if i % 6 == 3 else None, click_id=click_id,
                    ip="203.0.113.7" if i % 6 == 1 else f"198.51.100.{i % 250}"))
    with CaptureQueriesContext(connection) as queries:
        assert apply_pending() == n
    referred = Referral.objects.filter(referred__external_id__startswith=f"q{n}-")
    assert referred.count() == sum(i % 6 != 4 for i in range(n))
    assert referred.filter(click__isnull=False).count() == sum(i % 6 in (0, 1, 2, 5) for i in range(n))
    assert referred.filter(status="ineligible").count() == sum(i % 6 in (1, 5) for i in range(n))  # same IP, shared
    return len(queries)


def test_a_batch_of_sign_ups_with_clicks_costs_the_same_number_of_queries_whatever_its_size(
        apimarket, buffered_click, step_calls):
    alice = signup("alice", ip="203.0.113.7")
    carol = signup("carol")
    step_calls.clear()
    twenty = queries_with_clicks(20, alice, carol, buffered_click)
    assert twenty == queries_with_clicks(40, alice, carol, buffered_click)
    assert twenty <= 30
    assert step_calls == []


class FakeClock:
    """`time` for `clicks.find_clicks`: sleeping only moves the clock on, and can run `then`."""

    def __init__(self, then):
        self.now, self.slept, self.then = 0.0, [], then

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        self.then(len(self.slept))

    def time(self) -> float:
        import time

        return time.time()


def test_it_waits_once_for_the_clicks_of_a_run_that_another_process_has_not_written_yet(
        postgres_only, apimarket, settings, monkeypatch, step_calls):
    settings.REFERRAL = {**settings.REFERRAL, "CLICK_WRITE": "buffered", "CLICK_FLUSH_INTERVAL_MS": 200}
    alice = signup("alice")
    late = uuid.uuid4()
    for n in range(5):
        store(event("account.created", f"w-{n}", id=f"w-{n}", when=at(1), email=f"w{n}@example.com",
                    click_id=str(late if n == 3 else uuid.uuid4())))

    def other_process_writes(sleeps: int) -> None:
        if sleeps == 2:  # as another process's click writer commits it, during the wait
            Click.objects.create(public_id=late, referrer=alice, visitor_id="v" * 32, created_at=at(1))

    clock = FakeClock(other_process_writes)
    monkeypatch.setattr(clicks, "time", types.SimpleNamespace(monotonic=clock.monotonic, sleep=clock.sleep,
                                                              time=clock.time))
    step_calls.clear()

    assert apply_pending() == 5

    assert step_calls == []
    assert 0.45 <= sum(clock.slept) < 0.5 + 1e-9, "one wait for the run's four unknown clicks, not four"
    assert Referral.objects.get().click.public_id == late
    assert [w["code"] for w in Event.objects.get(external_id="w-0").warnings] == ["unknown_click"]


def _signup_state() -> dict:
    names = dict(Account.objects.values_list("id", "external_id"))
    return {
        "accounts": list(Account.objects.order_by("external_id").values_list(
            "external_id", "referral_code", "signup_ip", "signed_up_at")),
        "referrals": sorted((names[r], names[d], s, why) for r, d, s, why in Referral.objects.values_list(
            "referrer_id", "referred_id", "status", "ineligible_reason")),
        "flags": sorted((names[d], repr(signals)) for d, signals in FraudFlag.objects.values_list(
            "referral__referred_id", "signals")),
        "grants": sorted((names[a], amount, expires) for a, amount, expires in CreditGrant.objects.values_list(
            "account_id", "amount", "expires_at")),
        "balances": sorted((names[a], book, amount) for a, book, amount in Balance.objects.values_list(
            "account_id", "book", "amount")),
        "events": sorted(Event.objects.values_list("external_id", "warnings", "apply_error")),
    }


def test_an_api_batch_of_sign_ups_is_applied_set_based_with_the_answers_of_one_by_one(apimarket, predictable_codes):
    def codes_after_alice_and_bob():
        predictable_codes()
        for _ in range(2):  # alice and bob drew the first two
            Account._meta.get_field("referral_code").get_default()

    alice = signup("alice", when=at(0))
    bob = signup("bob", code=alice.referral_code, when=at(0))
    batch = [event("account.created", f"new-{i}", id=f"api-{i}", when=at(1, hours=i), email=f"new-{i}@example.com",
                   referral_code=bob.referral_code if i % 3 else alice.referral_code,
                   **({"ip": "203.0.113.9"} if i % 5 == 0 else {}))
             for i in range(30)]
    batch[4]["referral_code"] = "nosuchcode"  # accepted unattributed, with a warning
    batch[7] = event("account.created", "alice", id="api-7", when=at(1), email="again@example.com")  # exists
    batch[11]["template"] = "no-such-template"  # rejected
    batch[20] = event("account.created", "bob", id=bob_event_id(), when=at(0), email="bob@example.com",
                      referral_code=alice.referral_code)  # bob's own sign-up again: a duplicate

    codes_after_alice_and_bob()
    expected, one_by_one, reference = one_per_call_rolled_back(batch, _signup_state)
    codes_after_alice_and_bob()
    with CaptureQueriesContext(connection) as queries:
        results = [result.as_dict() for result in ingest_batch(batch)]

    assert results == expected
    assert [r["status"] for r in results].count("accepted") == 27
    assert {r["id"]: r["error"]["code"] for r in results if r["status"] == "rejected"} == {
        "api-7": "account_exists", "api-11": "unknown_template"}
    assert results[20]["status"] == "duplicate"
    assert _signup_state() == one_by_one
    # One by one, about 20 queries a sign-up (640 here); the batch is one run, the step taking
    # only what the run cannot (the existing account, the unknown template): 81 here.
    assert len(queries) * 5 < reference, (len(queries), reference)
    assert check_integrity() == [] and replay_differences() == []


def bob_event_id() -> str:
    return Event.objects.get(type=ev.ACCOUNT_CREATED, account__external_id="bob").external_id
