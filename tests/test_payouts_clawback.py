"""A refund after a payout request (issue 15.7): the clawback may drive the account's cash
negative, and then the payout it reserved is no longer covered. Approval refuses it and sending
holds it (back to requested, with the reason) instead of paying it; staff reject it (its
reservation returns to cash and covers the clawback) or approve it again once new earnings cover
it. Both orders, and races on PostgreSQL where the refund and the approval or the sending run at
the same moment on real connections."""
import threading
import time
from functools import partial

import pytest
from django.db import connection, connections

from ledger.models import Book
from ledger.selectors import balances_for
from payouts import services
from payouts.models import Payout, PayoutTransition
from referrals.engine.verification import check_integrity, verify
from referrals.presets import load_preset
from tests.fakes import fixtures
from tests.helpers import at, buy_credits, event, push, signup, usd

fake_stripe = fixtures.fake_stripe

CLAWBACK = usd("33.75")  # 1500.00 of bob's 2000.00 refunded: 3 % x 75 % of it


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.PAYOUT_PROCESS_ON_APPROVE = False
    settings.PAYOUT_AUTO_APPROVE_BELOW = "0"


def _world(fake_stripe, name: str = "alice"):
    """`name` with 45.00 of cash from bob's 2000.00 credit purchase, all of it requested."""
    alice = signup(name)
    buyer = f"{name}-bob"
    signup(buyer, code=alice.referral_code, when=at(1))
    paid = buy_credits(buyer, "2000.00", when=at(2))
    alice.refresh_from_db()
    connected = fake_stripe.add_account()
    services.payout_method_set(account=alice, type="stripe", connected_account=connected)
    payout = services.payout_request(account=alice, amount="45.00", method="stripe")
    return alice, buyer, paid, payout


def _refund(buyer: str, paid: str, amount: str = "1500.00", when=None):
    push(event("payment.refunded", buyer, when=when or at(3), amount=amount, refunds=paid))


def _cash(account) -> int:
    return balances_for(account.pk)[Book.CASH]


def test_a_refund_before_approval_makes_the_approval_refuse_it(db, vast, staff, fake_stripe):
    alice, buyer, paid, payout = _world(fake_stripe)
    _refund(buyer, paid)
    assert _cash(alice) == -CLAWBACK
    with pytest.raises(services.PayoutRefused, match=r"cash is -33\.75.*no longer covered"):
        services.payout_approve(payout=payout, actor=staff)
    payout.refresh_from_db()
    assert (payout.status, payout.approved_by) == ("requested", None)
    # Staff reject it: the reservation goes back to cash and covers the clawback.
    services.payout_reject(payout=payout, actor=staff, reason="clawed back")
    assert _cash(alice) == usd("45.00") - CLAWBACK
    assert fake_stripe.transfers == {}
    assert verify() == []


def test_a_refund_between_approval_and_sending_holds_it_for_staff(db, vast, staff, fake_stripe):
    alice, buyer, paid, payout = _world(fake_stripe)
    services.payout_approve(payout=payout, actor=staff)
    _refund(buyer, paid)
    sent = services.payout_process(payout_id=payout.pk)
    assert fake_stripe.transfers == {}
    assert sent.status == "requested"
    assert "cash is -33.75" in sent.held_reason and "no longer covered" in sent.held_reason
    assert (sent.approved_by, sent.approved_at) == (None, None)
    hold = PayoutTransition.objects.filter(payout=payout).last()
    assert (hold.from_status, hold.to_status, hold.reason) == ("approved", "requested", sent.held_reason)
    # The periodic job does not send it either, and approving again is refused while uncovered.
    assert services.retry_stuck_payouts(at=at(400))["retried"] == 0
    with pytest.raises(services.PayoutRefused, match="no longer covered"):
        services.payout_approve(payout=payout, actor=staff)
    # New earnings cover it: approval goes through and it is sent.
    buy_credits(buyer, "2000.00", when=at(4))
    assert _cash(alice) == usd("45.00") - CLAWBACK
    services.payout_approve(payout=payout, actor=staff)
    paid_out = services.payout_process(payout_id=payout.pk)
    assert (paid_out.status, paid_out.held_reason) == ("paid", "")
    assert len(fake_stripe.transfers) == 1
    assert _cash(alice) == usd("45.00") - CLAWBACK
    assert verify() == []


def test_a_small_refund_that_leaves_cash_at_zero_or_above_does_not_hold(db, vast, staff, fake_stripe):
    alice, buyer, paid, payout = _world(fake_stripe)
    buy_credits(buyer, "2000.00", when=at(2.5))  # 45.00 more cash, not requested
    services.payout_approve(payout=payout, actor=staff)
    _refund(buyer, paid)
    assert _cash(alice) == usd("45.00") - CLAWBACK
    assert services.payout_process(payout_id=payout.pk).status == "paid"


# --------------------------------------------------------------------------- races (PostgreSQL)

ROUNDS = 4
# How long the second racer waits after the barrier, per round: from "together" to "well after",
# so the rounds cover the refund landing before, during and after the other side's lock.
STAGGER = (0, 0.01, 0.03, 0.25)


def _race(*actions, stagger: float = 0):
    barrier = threading.Barrier(len(actions))
    errors = [None] * len(actions)

    def run(i, action):
        try:
            barrier.wait()
            if i:
                time.sleep(stagger)
            action()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    connection.close()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.mark.django_db(transaction=True)
def test_racing_a_refund_against_sending_never_pays_an_uncovered_payout(postgres_only, staff, fake_stripe):
    load_preset("vast")
    outcomes = set()
    for round_ in range(ROUNDS):
        alice, buyer, paid, payout = _world(fake_stripe, f"alice{round_}")
        services.payout_approve(payout=payout, actor=staff)
        before = len(fake_stripe.transfers)
        errors = _race(partial(_refund, buyer, paid), partial(services.payout_process, payout_id=payout.pk),
                       stagger=STAGGER[round_])
        assert errors == [None, None], errors
        payout.refresh_from_db()
        sent = len(fake_stripe.transfers) - before
        assert _cash(alice) == -CLAWBACK
        if payout.status == "paid":
            # Sent only because its claim came first: the cash it saw did not include the clawback.
            claim = PayoutTransition.objects.get(payout=payout, to_status="processing")
            assert (sent, claim.data["cash"]) == (1, 0)
        else:
            assert (payout.status, sent) == ("requested", 0)
            assert "no longer covered" in payout.held_reason
        outcomes.add(payout.status)
    assert check_integrity() == []
    assert outcomes <= {"paid", "requested"}


@pytest.mark.django_db(transaction=True)
def test_racing_a_refund_against_approval_then_sending_never_pays_an_uncovered_payout(postgres_only, staff,
                                                                                     fake_stripe):
    load_preset("vast")
    for round_ in range(ROUNDS):
        alice, buyer, paid, payout = _world(fake_stripe, f"alice{round_}")
        before = len(fake_stripe.transfers)
        errors = _race(partial(_refund, buyer, paid), partial(services.payout_approve, payout=payout, actor=staff),
                       stagger=STAGGER[round_])
        assert errors[0] is None, errors
        assert errors[1] is None or isinstance(errors[1], services.PayoutRefused), errors
        services.payout_process(payout_id=payout.pk)
        payout.refresh_from_db()
        # Whichever won the race, the refund is in before the sending: never sent.
        assert (payout.status, len(fake_stripe.transfers) - before) == ("requested", 0)
        assert _cash(alice) == -CLAWBACK
        services.payout_reject(payout=payout, actor=staff, reason="clawed back")
        assert _cash(alice) == usd("45.00") - CLAWBACK
    assert Payout.objects.filter(status="paid").count() == 0
    assert check_integrity() == []
