"""SPEC "Figures agree", as a property: over random histories (purchases that earn, payouts
requested, approved, paid, failed, rejected, cancelled, refunds before and after payouts) the
overview, the wallet, the earnings page, the earnings CSV, the API and the payouts desk's account
review all show the same figures, and those are the ledger's.

Every page is rendered for real through the Django test client and its figures are parsed back
from the HTML (`data-figure` cells); the expected figures are summed straight from the ledger
entries, not from the selectors under test."""
import csv
import io
import re
from collections import defaultdict
from contextlib import contextmanager
from decimal import ROUND_DOWN, Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from ledger.models import Book, Entry
from ledger.money import to_decimal
from payouts import services
from payouts.models import Payout
from referrals.api.keys import api_key_create
from referrals.models import Account, Program
from referrals.presets import load_preset
from tests.helpers import at, buy_credits, buy_plan, event, push, signup

CENT = Decimal("0.01")
MONEY = re.compile(r"(−|-)?\$([0-9,]+\.[0-9]+)")
ACTIONS = ["earn", "plan", "request", "request", "pay", "pay", "approve", "paid", "failed", "reject", "cancel",
           "refund", "refund"]


@contextmanager
def rolled_back():
    with transaction.atomic():
        yield
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:  # fire the deferred balance trigger now
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        transaction.set_rollback(True)


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.PAYOUT_PROCESS_ON_APPROVE = False
    settings.PAYOUT_AUTO_APPROVE_BELOW = "0"
    settings.PAYOUT_SECOND_APPROVAL_ABOVE = "0"


def shown(units: int) -> Decimal:
    """What a page shows for an amount: whole cents, rounded towards zero."""
    return to_decimal(units).quantize(CENT, rounding=ROUND_DOWN)


def money(text: str) -> Decimal:
    found = MONEY.search(text)
    assert found, f"no amount in {text!r}"
    value = Decimal(found.group(2).replace(",", ""))
    return -value if found.group(1) else value


def figures(html: str, scope: str = "") -> dict[str, Decimal]:
    """`data-figure` cells of a page (or of the element holding `scope`) -> their amounts."""
    if scope:
        start = html.index(scope)
        html = html[start:html.index("</tr>", start)] if scope.startswith("<tr") else html[start:]
    out = {}
    for name, content in re.findall(r'data-figure="([a-z_]+)">(.*?)</(?:td|dd)>', html, flags=re.S):
        if name not in out and name != "conversion_percent":
            out[name] = money(content)
    return out


def ledger_figures(account: Account) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Per programme key and for the account, straight from the entries."""
    per = defaultdict(lambda: defaultdict(int))
    keys = dict(Program.objects.values_list("pk", "key"))
    for entry in Entry.objects.filter(account=account).select_related("transaction"):
        row = per[keys[entry.program_id]] if entry.program_id else None
        books = {Book.PENDING: "pending", Book.RESERVED: "reserved"}
        if row is not None:
            if entry.transaction.kind in ("accrual", "reversal", "void"):
                row["earned"] += entry.amount
            if entry.book in books:
                row[books[entry.book]] += entry.amount
    for entry in Entry.objects.filter(book=Book.PAYOUTS, transaction__event__account=account):
        per[keys[entry.program_id]]["paid"] += entry.amount
    for row in per.values():
        row["available"] = row["earned"] - row["pending"] - row["paid"] - row["reserved"]
    books = defaultdict(int)
    for entry in Entry.objects.filter(account=account):
        books[entry.book] += entry.amount
    return {k: dict(v) for k, v in per.items()}, dict(books)


def _request_part(data, alice: Account) -> Payout:
    """A payout of a drawn share of what the account may withdraw now (often refused when small)."""
    from payouts.selectors import cash_available

    cents = cash_available(alice) // 10**8
    part = max(cents * data.draw(st.integers(min_value=1, max_value=100), label="percent") // 100, 1)
    return services.payout_request(account=alice, amount=f"{part // 100}.{part % 100:02d}", method="paypal")


def _history(data, alice: Account, staff) -> None:
    purchases = [buy_credits("bob", "3456.78", when=at(2)), buy_plan("bob", "1234.57", when=at(2))]
    for step in range(data.draw(st.integers(min_value=2, max_value=9), label="steps")):
        action = data.draw(st.sampled_from(ACTIONS), label="action")
        payouts = list(Payout.objects.order_by("id"))
        target = data.draw(st.sampled_from(payouts)) if payouts else None
        cents = data.draw(st.integers(min_value=1, max_value=400_000), label="cents")
        amount = f"{cents // 100}.{cents % 100:02d}"
        try:
            if action == "earn":
                purchases.append(buy_credits("bob", amount, when=at(2, step)))
            elif action == "plan":
                purchases.append(buy_plan("bob", amount, when=at(2, step)))
            elif action == "refund" and purchases:
                refunded = data.draw(st.sampled_from(purchases))
                push(event("payment.refunded", "bob", amount=amount if cents < 60_000 else "0.37", refunds=refunded,
                           when=at(3, step)))
            elif action == "request":
                _request_part(data, alice)
            elif action == "pay":
                payout = services.payout_approve(payout=_request_part(data, alice), actor=staff)
                services.payout_mark_paid(payout=payout, actor=staff, source="staff", reason="bank ref B-2")
            elif target is None:
                continue
            elif action == "approve":
                services.payout_approve(payout=target, actor=staff)
            elif action == "paid":
                services.payout_mark_paid(payout=target, actor=staff, source="staff", reason="bank ref B-1",
                                          reference="B-1")
            elif action == "failed":
                services.payout_mark_failed(payout=target, reason="bounced")
            elif action == "reject":
                services.payout_reject(payout=target, actor=staff, reason="no")
            elif action == "cancel":
                services.payout_cancel(payout=target, actor=None)
        except (services.PayoutInvalid, services.PayoutRefused, AssertionError):
            pass  # refused (e.g. above the balance, a refund larger than what is left): nothing changed


@pytest.mark.django_db
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_every_page_csv_api_and_desk_shows_the_ledgers_figures(data, staff):
    with rolled_back():
        load_preset("vast")
        Program.objects.create(key="vast-plans", name="Plan cash", kind=Program.Kind.PURCHASE_COMMISSION,
                               event_types=["plan.purchased"], rate=Decimal("7.25"), pays_in=Program.PaysIn.CASH,
                               payout_methods=["paypal"])
        alice = signup("alice")
        signup("bob", code=alice.referral_code, when=at(1))
        user = get_user_model().objects.create_user("alice@example.com", "alice@example.com", "Sturdy-pass-9911")
        Account.objects.filter(pk=alice.pk).update(user=user)
        services.payout_method_set(account=alice, type="paypal", email="alice@paypal.test")
        _history(data, alice, staff)
        alice.refresh_from_db()

        per, books = ledger_figures(alice)
        earned_total = sum(row["earned"] for row in per.values())
        portal = Client()
        portal.force_login(user, backend="django.contrib.auth.backends.ModelBackend")

        # The overview: balances, the referral total, and every programme's row.
        overview = portal.get("/dashboard/").content.decode()
        top = figures(overview, '<dl class="stats">')
        assert top["credits"] == shown(books.get(Book.CREDITS, 0))
        assert top["cash_available"] == shown(max(books.get(Book.CASH, 0), 0))
        assert top["pending"] == shown(books.get(Book.PENDING, 0))
        assert top["total_earnings"] == shown(earned_total)
        for key, row in per.items():
            cells = figures(overview, f'<tr data-program="{key}">')
            assert cells == {name: shown(row[name]) for name in ("earned", "pending", "paid", "reserved",
                                                                 "available")}, key

        # The wallet.
        wallet = figures(portal.get("/dashboard/wallet/").content.decode(), '<dl class="stats">')
        assert wallet == {"credits": top["credits"], "cash_available": top["cash_available"],
                          "pending": top["pending"], "reserved": shown(books.get(Book.RESERVED, 0)),
                          "paid": shown(sum(row["paid"] for row in per.values()))}

        # The earnings page's total, and the CSV: its rows add up to its total row, which is the ledger's.
        page = figures(portal.get("/dashboard/earnings/").content.decode(), 'id="earnings-total"')
        assert page["earned"] == shown(earned_total)
        assert page["available"] == shown(sum(row["available"] for row in per.values()))
        *rows, total = csv.DictReader(io.StringIO(b"".join(portal.get("/dashboard/earnings.csv")
                                                           .streaming_content).decode()))
        assert Decimal(total["amount_exact"]) == to_decimal(earned_total)
        assert sum(Decimal(r["amount_usd"]) for r in rows) == Decimal(total["amount_usd"]) == shown(earned_total)

        # The API, exact, with every field of a row at one precision.
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(name='read', scopes=['read'])[1]}")
        programs = {row["program"]: row for row in api.get("/api/v1/accounts/alice/earnings").json()["programs"]}
        assert set(programs) == set(per)
        for key, row in per.items():
            answer = programs[key]
            assert len({len(answer[n].partition(".")[2]) for n in ("earned", "pending", "paid", "reserved",
                                                                   "available")}) == 1, answer
            assert {n: Decimal(answer[n]) for n in row} == {n: to_decimal(v) for n, v in row.items()}, key
        balances = api.get("/api/v1/accounts/alice").json()["balances"]
        assert {k: Decimal(v) for k, v in balances.items()} == {
            "credits": top["credits"], "cash_available": top["cash_available"], "pending": top["pending"]}
        stats = api.get("/api/v1/accounts/alice/stats").json()
        assert Decimal(stats["total_earnings"]) == to_decimal(earned_total)
        card = re.search(r'data-figure="conversion_percent">([0-9.]+)%', overview).group(1)
        assert Decimal(card) == (Decimal(stats["conversion_rate"]) * 100).quantize(Decimal("0.1"))
        assert f"{card}% of the step before" in overview

        # The payouts desk's account review beside a payout.
        payout = Payout.objects.order_by("-id").first()
        if payout is not None:
            desk = Client()
            desk.force_login(get_user_model().objects.create_superuser("boss", "boss@operator.test", "pw-boss-123"))
            review = desk.get(f"/admin/payouts/payout/{payout.pk}/change/").content.decode()
            for key, row in per.items():
                cells = figures(review, f'<tr data-program="{key}">')
                assert cells == {name: shown(row[name]) for name in ("earned", "pending", "paid", "reserved",
                                                                     "available")}, key
