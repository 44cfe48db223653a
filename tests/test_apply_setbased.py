"""The engine (referrals.engine.apply) applies stored events set-based across accounts: the same
random history applied in batches of 1, 7 and 1,000 gives identical accruals, ledger, balances,
rollups, milestones, referral, account and template figures and outbox messages, and its replay
gives them again; commission stays rate x spend exactly; a batch costs a bounded number of
queries whatever its number of accounts."""
from datetime import timedelta
from decimal import Decimal

from django.db import connection
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ledger.models import Balance, Book, Entry
from ledger.models import Transaction as LedgerTransaction
from ledger.selectors import balances_for
from referrals.engine import bulk, rollups
from referrals.engine import events as ev
from referrals.engine.ingestion import apply_pending, ingest_batch
from referrals.engine.jobs import run_jobs
from referrals.engine.services import application_approve
from referrals.engine.verification import check_integrity, replay_differences
from referrals.models import (
    Account,
    Accrual,
    Application,
    CreditGrant,
    Event,
    FraudFlag,
    MilestoneAward,
    Program,
    Referral,
    Template,
)
from referrals.presets import load_preset
from tests.helpers import T0, at, event, examples, published, signup, store, usd
from tests.test_ledger_properties import History, assert_invariants, rolled_back


def snapshot(messages) -> dict:
    """Everything applying events writes, compared as sorted lists, ids of new rows left out
    (sequences differ between two attempts on PostgreSQL): accounts are named by external id
    (a batch's sign-ups open new ones), referrals by their referred account."""
    names = dict(Account.objects.values_list("id", "external_id"))
    referred = {pk: names[account] for pk, account in Referral.objects.values_list("id", "referred_id")}
    fields = ("program_id", "rule", "beneficiary_id", "event_id", "referral_id", "template_id", "amount", "reversed",
              "destination", "track", "state", "held_for_gate", "held_for_template", "held_for_fraud", "held_until",
              "expires_days", "created_at", "released_at")
    accrual_rows = {}
    for pk, *values in Accrual.objects.values_list("id", *fields):
        row = dict(zip(fields, values, strict=True))
        row["beneficiary_id"], row["referral_id"] = names[row["beneficiary_id"]], referred.get(row["referral_id"])
        accrual_rows[pk] = tuple(row.values())
    txns = []
    for txn in LedgerTransaction.objects.order_by("id").prefetch_related("entries"):
        legs = sorted((names.get(e.account_id, ""), e.book, e.program_id or 0, e.amount) for e in txn.entries.all())
        txns.append((txn.kind, txn.rule, txn.event_id or 0, tuple(legs)))
    sent = []
    for kind, account_id, data in published(messages):
        # An accrual's id becomes what it is an accrual of; a referral's its referred account.
        accrual = accrual_rows.get(data.get("accrual"))
        data = {**data, "referral": referred.get(data["referral"])} if "referral" in data else data
        sent.append((kind, names[account_id], repr(sorted((k, v) for k, v in data.items() if k != "accrual")),
                          repr(accrual)))
    return {
        "accruals": sorted(accrual_rows.values(), key=repr),
        "transactions": sorted(txns, key=repr),
        "balances": set((names[a], book, amount) for a, book, amount in
                        Balance.objects.values_list("account_id", "book", "amount")),
        "referrals": set((names[r], names[d], *rest) for r, d, *rest in Referral.objects.values_list(
            "referrer_id", "referred_id", "spend", "purchases", "converted_at", "status", "ineligible_reason")),
        "accounts": set((names[pk], *rest) for pk, *rest in Account.objects.values_list(
            "id", "purchased_credits", "track", "email_normalized", "signup_ip", "device_id", "signed_up_at")),
        "templates": set(Template.objects.values_list("id", "runtime_seconds", "qualified_at")),
        "awards": set((p, referred[r], e) for p, r, e in
                      MilestoneAward.objects.values_list("program_id", "referral_id", "event_id")),
        "events": set((pk, names.get(a), t, refunded, error, repr(warnings)) for pk, a, t, refunded, error, warnings in
                      Event.objects.values_list("id", "account_id", "template_id", "refunded", "apply_error",
                                                "warnings")),
        "applied": set(Event.objects.filter(applied_at__isnull=False).values_list("id", flat=True)),
        "flags": sorted((referred[f.referral_id], f.status, str(f.signals)) for f in FraudFlag.objects.all()),
        "grants": set((names[a], *rest) for a, *rest in CreditGrant.objects.values_list(
            "account_id", "amount", "remaining", "expires_at")),
        "messages": sorted(sent),
        "rollups": {table: sorted(((names.get(row[0], row[0]), *row[1:]) for row in rows), key=repr)
                    for table, rows in rollups_now().items()},
    }


def rollups_now() -> dict:
    """The dashboard rollups, each key's delta rows summed (compaction does not change them)."""
    out = {}
    for rollup in rollups.ROLLUPS:
        names = rollup.fragments()
        with connection.cursor() as cursor:
            cursor.execute(bulk.sql("SELECT {keys}, {sums} FROM {t} GROUP BY {keys}", **names))
            out[rollup.table] = sorted((row for row in cursor.fetchall() if any(row[len(rollup.keys):])), key=repr)
    return out


def applied_in_batches(capture, settings, size: int) -> tuple[dict, int]:
    """Apply everything pending in batches of `size`, rolled back; what it wrote."""
    settings.APPLY_BATCH_MAX = size
    with rolled_back():
        with capture(execute=False) as callbacks:
            applied = apply_pending()
        assert check_integrity() == []
        assert_invariants(replay=size == 1000)
        return snapshot(callbacks), applied


amounts = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1500"), places=6).map(str)


@settings(max_examples=examples(25), deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_a_random_history_applied_in_batches_of_1_7_and_1000_gives_the_same_state(
        db, data, django_capture_on_commit_callbacks, settings):
    settings.INGEST_INLINE_APPLY_MAX = 0
    with rolled_back():
        for preset in ("runpod", "apimarket", "vast"):
            load_preset(preset)
        Program.objects.filter(key="runpod-revenue-share").update(gate_min_referrals=2, gate_min_spend=10)
        if data.draw(st.booleans()):
            Program.objects.filter(key="runpod-template-share").update(hold_days=data.draw(st.integers(0, 10)))
        # A random history first (sign-ups, some ineligible; charges, refunds, approvals,
        # track changes, jobs), applied as it happens.
        history = History(data)
        history.open_referrers()
        history.send(history.raw(ev.TEMPLATE_PUBLISHED, "ref-a", template="tpl"))
        history.send(history.raw(ev.TEMPLATE_PUBLISHED, "ref-b", template="tpl-b"))
        for _ in range(data.draw(st.integers(min_value=3, max_value=15))):
            history.step()
        if data.draw(st.booleans()):
            run_jobs(at=T0 + timedelta(days=61), names=["revenue_share_gates"])
            for application in Application.objects.filter(status="open"):
                application_approve(application=application, actor=None)

        # Then money events of every account, refunds of them and sign-ups (referred by code or
        # template link, some sharing the referrer's e-mail, IP or device, some with an unknown
        # code, some twice or of an account that exists), stored and not applied yet.
        batch, accepted, opened = [], 0, set(history.accounts)
        payments = list(history.money_events)  # (event id, account): what a refund in the batch may refund
        for n in range(data.draw(st.integers(min_value=1, max_value=60))):
            kind = data.draw(st.sampled_from(["usage", "usage", "usage", "credits", "plan", "signup", "signup",
                                              "refund", "refund"]))
            if kind == "refund":
                if payments:
                    # Often of one payment twice in a row, some larger than what is left (rejected).
                    target, owner = data.draw(st.sampled_from(payments[-3:]))
                    raw = event(ev.PAYMENT_REFUNDED, owner, id=f"batch-{n}", refunds=target,
                                when=T0 + timedelta(days=data.draw(st.integers(0, 60)), seconds=n),
                                amount=data.draw(st.sampled_from(["0.000001", "0.01", "1.00"]) | amounts))
                    # Logged in id order with the money events before it, as the applier finds them
                    # (a batch would apply it on its own).
                    results = ingest_batch(batch, now=T0 + timedelta(days=400))
                    assert {r.status for r in results} <= {"accepted"}
                    accepted += len(batch) + 1
                    batch = []
                    store(raw)
                continue
            if kind == "signup":
                name = data.draw(st.sampled_from([f"new-{n}", f"new-{n}", f"new-{n - 1}", *history.accounts[:2]]))
                referrer = Account.objects.get(external_id=data.draw(st.sampled_from(history.accounts[:2])))
                raw = event(ev.ACCOUNT_CREATED, name, id=f"batch-{n}", when=T0 + timedelta(
                    days=data.draw(st.integers(0, 60)), seconds=n), **history.signup_fields(name, referrer))
                # Logged between the money events around it, as the applier finds them.
                results = ingest_batch(batch, now=T0 + timedelta(days=400))
                assert {r.status for r in results} <= {"accepted"}
                accepted += len(batch)
                batch = []
                store(raw)
                if name not in opened:
                    opened.add(name)
                    accepted += 1
                continue
            fields = {"amount": data.draw(amounts)}
            if kind == "usage":
                fields["product"] = data.draw(st.sampled_from(["serverless", "pods"]))
                if data.draw(st.booleans()):
                    fields["template"] = data.draw(st.sampled_from(["tpl", "tpl-b"]))
                    fields["runtime_seconds"] = data.draw(st.sampled_from([0, 60, 3600, 30000]))
            elif kind == "plan":
                fields["plan"] = "pro"
            elif data.draw(st.integers(0, 9)) == 0:
                fields["payment_fingerprint"] = data.draw(st.sampled_from(["card_a", "card_b"]))
            type_ = {"usage": ev.USAGE_CHARGED, "credits": ev.CREDITS_PURCHASED, "plan": ev.PLAN_PURCHASED}[kind]
            owner = data.draw(st.sampled_from(history.accounts))
            batch.append(event(type_, owner, id=f"batch-{n}",
                               when=T0 + timedelta(days=data.draw(st.integers(0, 60)), seconds=n), **fields))
            payments.append((f"batch-{n}", owner))
        results = ingest_batch(batch, now=T0 + timedelta(days=400))
        assert {r.status for r in results} <= {"accepted"}
        accepted += len(batch)

        states = {}
        for size in (1, 7, 1000):
            states[size], applied = applied_in_batches(django_capture_on_commit_callbacks, settings, size)
            too_large = sum("left to refund" in error for *_, error, _ in states[size]["events"])
            assert applied + too_large == accepted, size
        for part in states[1]:
            assert states[1][part] == states[7][part] == states[1000][part], part


def test_it_applies_a_thousand_charges_of_many_accounts_with_a_bounded_number_of_queries(
        runpod, stored_only, django_assert_max_num_queries):
    alice = signup("alice")
    carol = signup("carol")
    signup("bob", code=alice.referral_code, when=at(1))
    for n in range(40):
        signup(f"acct-{n}", code=carol.referral_code, when=at(1))
    ingest_batch([event("usage.charged", "bob" if i % 2 else f"acct-{i % 40}", id=f"c-{i}", when=at(2),
                        amount="1.50", product="serverless" if i % 4 == 1 else "pods") for i in range(2000)])
    # One applier transaction per 1,000 events, whatever their number of accounts (per event
    # this was about 18 queries; per account run about 12); on SQLite the bulk statements are
    # split by its limit on query parameters, hence the margin.
    with django_assert_max_num_queries(50 if connection.vendor == "postgresql" else 120):
        assert apply_pending() == 2000
    assert balances_for(alice.pk)[Book.PENDING] == usd("30.00")  # 2% of $1,500, held for the gate
    assert Referral.objects.get(referred__external_id="bob").spend == usd("1500.00")
    # $750 of serverless: the milestone at $1,000 is not reached.
    assert not MilestoneAward.objects.exists()
    assert Entry.objects.filter(transaction__event__external_id="c-7").count() == 2
    assert check_integrity() == [] and replay_differences() == []


def test_it_pays_a_milestone_on_the_charge_that_crosses_it_in_a_stored_batch(runpod, stored_only):
    alice = signup("alice")
    signup("bob", code=alice.referral_code, when=at(1))
    ingest_batch([event("usage.charged", "bob", id=f"s-{i}", when=at(2), amount="600.00", product="serverless")
                  for i in range(2)])
    apply_pending()
    # $600 then $1,200: the second charge crosses $1,000, not the first (whose later siblings
    # were already stored when it was applied).
    assert MilestoneAward.objects.get().event == Event.objects.get(external_id="s-1")
    assert balances_for(alice.pk)[Book.CREDITS] == usd("500.00")
    assert check_integrity() == [] and replay_differences() == []


def test_a_purchase_with_a_payment_fingerprint_flags_in_id_order(vast, stored_only, caplog):
    alice = signup("alice")
    ingest_batch([event("credits.purchased", "alice", id="a-1", when=at(1), amount="5.00",
                        payment_fingerprint="card_abc")])
    apply_pending()
    bob = signup("bob", code=alice.referral_code, when=at(2))
    ingest_batch([
        event("credits.purchased", "bob", id="b-1", when=at(3), amount="100.00"),
        event("credits.purchased", "bob", id="b-2", when=at(3), amount="100.00", payment_fingerprint="card_abc"),
        event("credits.purchased", "bob", id="b-3", when=at(3), amount="100.00"),
    ])

    assert apply_pending() == 3

    # b-1 earns, b-2 (the shared card) flags the referral and holds b-1's commission, b-3 is
    # held for fraud from the start.
    referral = Referral.objects.get(referred=bob)
    assert referral.status == Referral.Status.INELIGIBLE
    assert not Accrual.objects.filter(referral=referral).exclude(state=Accrual.State.HELD).exists()
    assert balances_for(alice.pk)[Book.PENDING] == usd("9.00")  # 3% of $300
    assert Account.objects.get(pk=bob.pk).purchased_credits == usd("300.00")
    assert check_integrity() == [] and replay_differences() == []


def test_purchases_whose_payment_method_flags_nothing_stay_in_one_run(vast, stored_only):
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    from referrals.models import PaymentFingerprint

    alice = signup("alice")
    for n in range(40):
        signup(f"buyer-{n}", code=alice.referral_code, when=at(1))

    def applied_with(count: int, batch: str) -> int:
        # Every buyer pays with a card of its own (a new one, then the same again): nothing to flag.
        ingest_batch([event("credits.purchased", f"buyer-{i % 20 + (20 if batch == 'b' else 0)}", id=f"{batch}-{i}",
                            when=at(2), amount="10.00", payment_fingerprint=f"card-{batch}-{i % 20}")
                      for i in range(count)])
        with CaptureQueriesContext(db) as queries:
            assert apply_pending() == count
        return len(queries)

    # One run, not a payment check per purchase (about ten queries each before): the same
    # statements for 10 and 40 purchases, give or take SQLite splitting a long bulk insert.
    few, many = applied_with(10, "a"), applied_with(40, "b")
    assert many <= few + (0 if db.vendor == "postgresql" else 2)
    assert PaymentFingerprint.objects.count() == 30  # 10 cards of a's, 20 of b's, each once
    assert not Referral.objects.filter(status=Referral.Status.INELIGIBLE).exists()
    assert check_integrity() == [] and replay_differences() == []


def test_the_charge_that_qualifies_a_template_releases_its_held_earnings(runpod, stored_only):
    alice = signup("alice")
    ingest_batch([event("template.published", "alice", id="t-0", template="tpl")])
    signup("bob")
    ingest_batch([event("usage.charged", "bob", id=f"t-{i}", when=at(1, hours=i), amount="100.00", product="pods",
                        template="tpl", runtime_seconds=10 * 3600) for i in range(1, 5)])

    assert apply_pending() == 4

    # t-1 and t-2 held (20 h), t-3 reaches 30 h: it qualifies the template and releases them;
    # t-4 is paid released.
    template = Template.objects.get(external_id="tpl")
    assert template.runtime_seconds == 40 * 3600
    assert template.qualified_at == at(1, hours=3)
    assert balances_for(alice.pk)[Book.CREDITS] == usd("4.00")
    assert balances_for(alice.pk)[Book.PENDING] == 0
    assert set(Event.objects.filter(external_id__startswith="t-", type="usage.charged")
               .values_list("template__external_id", flat=True)) == {"tpl"}
    assert check_integrity() == [] and replay_differences() == []


def test_it_qualifies_a_shared_template_on_the_charge_that_reaches_the_gate_in_id_order(runpod, stored_only):
    alice = signup("alice")
    ingest_batch([event("template.published", "alice", id="t-0", template="tpl")])
    signup("bob")
    signup("carol")
    charge = {"amount": "100.00", "product": "pods", "template": "tpl", "runtime_seconds": 10 * 3600}
    ingest_batch([event("usage.charged", "carol", id="q-1", when=at(1, hours=1), **charge),
                  event("usage.charged", "bob", id="q-2", when=at(1, hours=2), **charge),
                  event("usage.charged", "carol", id="q-3", when=at(1, hours=3), **charge),
                  event("usage.charged", "bob", id="q-4", when=at(1, hours=4), amount="5.00", product="pods")])

    assert apply_pending() == 4

    # 10 h + 10 h + 10 h: carol's second charge reaches 24 h, as in a replay of the log; taking
    # carol's charges first would have qualified the template on bob's.
    assert Template.objects.get(external_id="tpl").qualified_at == at(1, hours=3)
    assert balances_for(alice.pk)[Book.CREDITS] == usd("3.00")
    assert check_integrity() == [] and replay_differences() == []
