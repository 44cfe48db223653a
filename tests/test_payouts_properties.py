"""Property test: over random sequences of payout actions the cash never goes negative, what is
reserved is exactly the open payouts, cash + reserved + paid out is what was earned, and the
ledger still balances and replays."""
from contextlib import contextmanager

import pytest
from django.db import connection, transaction
from django.db.models import Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.models import Book, Entry
from ledger.money import CENT
from ledger.selectors import balances_for
from payouts import services
from payouts.models import Payout
from referrals.engine.verification import check_integrity, replay_differences
from referrals.presets import load_preset
from tests.helpers import at, buy_credits, signup

ACTIONS = ["request", "request", "approve", "paid", "failed", "reject", "cancel", "retry", "earn"]


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


@pytest.mark.django_db
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_it_keeps_payout_money_exact_over_random_actions(data, staff):
    with rolled_back():
        load_preset("vast")
        alice = signup("alice")
        signup("bob", code=alice.referral_code, when=at(1))
        services.payout_method_set(account=alice, type="paypal", email="alice@paypal.test")
        earned = 0
        for step in range(data.draw(st.integers(min_value=1, max_value=15))):
            action = data.draw(st.sampled_from(ACTIONS))
            payouts = list(Payout.objects.order_by("id"))
            target = data.draw(st.sampled_from(payouts)) if payouts else None
            try:
                if action == "earn":
                    buy_credits("bob", data.draw(st.sampled_from(["1.00", "333.33", "2000.00"])), when=at(2, step))
                elif action == "request":
                    cents = data.draw(st.integers(min_value=1, max_value=6000))
                    services.payout_request(account=alice, amount=f"{cents // 100}.{cents % 100:02d}",
                                            method="paypal")
                elif target is None:
                    continue
                elif action == "approve":
                    services.payout_approve(payout=target, actor=staff)
                elif action == "paid":
                    services.payout_mark_paid(payout=target, actor=staff, source="staff", reason="seen")
                elif action == "failed":
                    services.payout_mark_failed(payout=target, reason="bounced")
                elif action == "reject":
                    services.payout_reject(payout=target, actor=staff, reason="no")
                elif action == "cancel":
                    services.payout_cancel(payout=target, actor=None)
                elif action == "retry":
                    services.payout_retry(payout=target, actor=staff)
            except (services.PayoutInvalid, services.PayoutRefused):
                pass  # refused actions change nothing; the invariants below prove it
            alice.refresh_from_db()
            books = balances_for(alice.pk)
            earned = int(Entry.objects.filter(account=alice, book=Book.CASH, transaction__kind="accrual")
                         .aggregate(t=Sum("amount"))["t"] or 0)
            paid = int(Entry.objects.filter(book=Book.PAYOUTS, transaction__event__account=alice)
                       .aggregate(t=Sum("amount"))["t"] or 0)
            open_amount = int(Payout.objects.open().aggregate(t=Sum("amount"))["t"] or 0)
            paid_amount = int(Payout.objects.filter(status="paid").aggregate(t=Sum("amount"))["t"] or 0)
            assert books[Book.CASH] >= 0
            assert books[Book.RESERVED] == open_amount
            assert paid == paid_amount
            assert books[Book.CASH] + books[Book.RESERVED] + paid == earned
            assert all(p.amount % CENT == 0 for p in Payout.objects.all())
        assert check_integrity() == []
        assert replay_differences() == []
