"""E-mail notifications: sent by Celery tasks after commit, for the outbox messages users care
about, through Django's mail framework, and only the kinds the user left on."""
import re
from datetime import timedelta

import pytest
from celery import current_app
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client
from django.utils import timezone

from notifications.models import NotificationPreference, SentNotification
from notifications.services import PreferenceError, preferences_update, send_expiry_reminders
from referrals.engine import outbox
from referrals.engine.ingestion import apply_pending
from referrals.engine.services import application_approve, application_reject
from referrals.models import Account, Application, AuditLog, CreditGrant
from tests.helpers import event, signup, store

User = get_user_model()
PASSWORD = "Sturdy-pass-9911"


@pytest.fixture(autouse=True)
def eager_celery():
    """Run the tasks in-process, as a worker would, so the test sees their e-mails."""
    conf = current_app.conf
    saved = conf.task_always_eager, conf.task_eager_propagates
    conf.task_always_eager, conf.task_eager_propagates = True, True
    yield
    conf.task_always_eager, conf.task_eager_propagates = saved


def _with_login(account: Account, email: str) -> Account:
    user = User.objects.create_user(email, email, PASSWORD)
    Account.objects.filter(pk=account.pk).update(user=user)
    account.refresh_from_db()
    return account


@pytest.fixture
def alice(db):
    return _with_login(signup("alice", email="alice@example.com"), "alice@example.com")


def test_it_emails_the_referrer_after_a_sign_up_through_the_link(alice, mailoutbox,
                                                                  django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        signup("dora", code=alice.referral_code)
    assert len(mailoutbox) == 1
    mail = mailoutbox[0]
    assert mail.to == ["alice@example.com"]
    assert mail.subject == "Someone signed up through your referral link"
    assert "A new account (dora) signed up" in mail.body
    assert "/dashboard/notifications/" in mail.body


def test_it_sends_nothing_before_the_transaction_commits(alice, mailoutbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        signup("dora", code=alice.referral_code)
    assert mailoutbox == [] and callbacks


def test_it_sends_nothing_when_the_user_turned_the_kind_off(alice, mailoutbox, django_capture_on_commit_callbacks):
    preferences_update(user=alice.user, values={"referral_signed_up": False})
    with django_capture_on_commit_callbacks(execute=True):
        signup("dora", code=alice.referral_code)
    assert mailoutbox == []


def test_it_sends_nothing_to_an_account_without_a_login(db, mailoutbox, django_capture_on_commit_callbacks):
    bob = signup("bob", email="bob@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        signup("erin", code=bob.referral_code)
    assert mailoutbox == []


def test_it_emails_application_decisions(alice, runpod, staff, mailoutbox, django_capture_on_commit_callbacks):
    program = runpod["revenue_share"]
    approved = Application.objects.create(program=program, account=alice, opened_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        application_approve(application=approved, actor=staff)
    assert mailoutbox[-1].subject == "Your application to Lifetime revenue share was approved"
    assert "pending earnings from it are now released" in mailoutbox[-1].body

    bob = _with_login(signup("bob", email="bob@example.com"), "bob@example.com")
    rejected = Application.objects.create(program=program, account=bob, opened_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        application_reject(application=rejected, actor=staff, reason="Referrals look inactive")
    assert mailoutbox[-1].to == ["bob@example.com"]
    assert mailoutbox[-1].subject == "Your application to Lifetime revenue share was rejected"
    assert "Reason: Referrals look inactive" in mailoutbox[-1].body


@pytest.mark.parametrize(("kind", "subject", "words"), [
    ("payout.paid", "Your payout of $30.00 was paid", "to stripe was paid"),
    ("payout.failed", "Your payout of $30.00 failed", "failed: account closed"),
])
def test_it_emails_payout_outcomes(alice, mailoutbox, django_capture_on_commit_callbacks, kind, subject, words):
    # `payouts` publishes these kinds with this data (payouts.services._message).
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        outbox.publish(kind, account_id=alice.pk, data={"payout": 1, "amount": "30.00", "method": "stripe",
                                                        "status": kind.split(".")[1], "reason": "account closed"})
    assert [m.subject for m in mailoutbox] == [subject]
    assert words in mailoutbox[0].body


def test_it_ignores_messages_nobody_gets_an_email_for(alice, mailoutbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        outbox.publish(outbox.COMMISSION_CREATED, account_id=alice.pk, data={})
    assert mailoutbox == []


# --------------------------------------------------------------------------- expiring credits


@pytest.fixture
def hank(apimarket, alice):
    """Hank signed up through Alice's link 28 days ago: his $2.50 credit expires in 2 days."""
    when = timezone.now() - timedelta(days=28)
    return _with_login(signup("hank", email="hank@example.com", code=alice.referral_code, when=when),
                       "hank@example.com")


def test_it_reminds_of_credits_expiring_within_three_days_once(hank, mailoutbox, django_capture_on_commit_callbacks):
    grant = CreditGrant.objects.get(account=hank)
    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert send_expiry_reminders(at=grant.expires_at - timedelta(days=4)) == 0
    assert mailoutbox == []
    with django_capture_on_commit_callbacks(execute=True):
        assert send_expiry_reminders(at=grant.expires_at - timedelta(days=2)) == 1
    assert [m.to for m in mailoutbox] == [["hank@example.com"]]
    assert mailoutbox[0].subject == "$2.50 of your credits expire soon"
    assert f"expire on {grant.expires_at:%Y-%m-%d %H:%M} UTC" in mailoutbox[0].body
    with django_capture_on_commit_callbacks(execute=True):
        assert send_expiry_reminders(at=grant.expires_at - timedelta(days=1)) == 0
    assert len(mailoutbox) == 1
    assert SentNotification.objects.get().key == f"credits-expiring:grant:{grant.pk}"


def test_it_skips_spent_expired_and_opted_out_credits(hank, mailoutbox, django_capture_on_commit_callbacks):
    grant = CreditGrant.objects.get(account=hank)
    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert send_expiry_reminders(at=grant.expires_at + timedelta(minutes=1)) == 0
    preferences_update(user=hank.user, values={"credits_expiring": False})
    with django_capture_on_commit_callbacks(execute=True):
        send_expiry_reminders(at=grant.expires_at - timedelta(days=1))
    assert mailoutbox == []


# --------------------------------------------------------------------------- settings page


def test_it_turns_each_kind_off_and_on_from_the_settings_page(alice, client):
    client.force_login(alice.user, backend="django.contrib.auth.backends.ModelBackend")
    page = client.get("/dashboard/notifications/").content.decode()
    assert page.count('type="checkbox"') == 4 and page.count("checked") == 4
    response = client.post("/dashboard/notifications/", {"application_decided": "on", "payout_status": "on"},
                           follow=True)
    assert "Your e-mail settings are saved." in response.content.decode()
    preference = NotificationPreference.objects.get(user=alice.user)
    assert (preference.referral_signed_up, preference.application_decided, preference.payout_status,
            preference.credits_expiring) == (False, True, True, False)
    audit = AuditLog.objects.get(action="notifications.update")
    assert audit.data == {"referral_signed_up": False, "credits_expiring": False}
    client.post("/dashboard/notifications/", {})
    preference.refresh_from_db()
    assert not any((preference.application_decided, preference.payout_status))
    page = re.sub(r"\s+", " ", client.get("/dashboard/notifications/").content.decode())
    assert "checked" not in page


def test_it_keeps_one_users_settings_from_another(alice, db):
    bob = _with_login(signup("bob", email="bob@example.com"), "bob@example.com")
    client = Client()
    client.force_login(bob.user, backend="django.contrib.auth.backends.ModelBackend")
    client.post("/dashboard/notifications/", {})
    assert not NotificationPreference.objects.filter(user=alice.user).exists()
    assert NotificationPreference.objects.get(user=bob.user).referral_signed_up is False


def test_it_refuses_settings_changes_without_csrf(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice.user, backend="django.contrib.auth.backends.ModelBackend")
    assert client.post("/dashboard/notifications/", {}).status_code == 403
    assert not NotificationPreference.objects.exists()


@pytest.mark.parametrize(("values", "field"), [
    ({"sms": True}, "sms"),
    ({"payout_status": "no"}, "payout_status"),
])
def test_it_names_the_field_of_a_bad_setting_and_changes_nothing(alice, values, field):
    with pytest.raises(PreferenceError, match=f"^{field}:"):
        preferences_update(user=alice.user, values=values)
    assert not NotificationPreference.objects.exists()


def test_a_batch_of_sign_ups_emails_who_wants_it_with_queries_per_kind_not_per_message(
        alice, mailoutbox, django_capture_on_commit_callbacks, django_assert_max_num_queries):
    carol = _with_login(signup("carol", email="carol@example.com"), "carol@example.com")
    preferences_update(user=carol.user, values={"referral_signed_up": False})
    bob = signup("bob", email="bob@example.com")  # no login: no e-mail
    referrers = [alice, carol, bob] * 4
    for n, referrer in enumerate(referrers):
        store(event("account.created", f"new-{n}", email=f"new-{n}@example.com",
                    referral_code=referrer.referral_code))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert apply_pending() == len(referrers)
    # Two reads decide the whole batch, each e-mail sent reads its recipient again (the task
    # checks when it runs, 2), and the webhooks read their endpoints once: 29 one by one.
    with django_assert_max_num_queries(2 + 4 * 2 + 1):
        for callback in callbacks:
            callback()
    assert sorted(mail.to[0] for mail in mailoutbox) == ["alice@example.com"] * 4
