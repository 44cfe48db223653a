"""E-mail notifications: preferences, the e-mails for outbox messages, and expiry reminders.

E-mails go through Django's mail framework (console backend by default, SMTP by settings) to the
portal login of the account; accounts without a login get none (they have no settings page to
turn them off). Sending happens in Celery tasks queued after commit (see `consumers`, `tasks`).
"""
import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Min, Sum
from django.template.loader import render_to_string

from ledger.money import format_cents
from referrals.models import Account, AuditLog, CreditGrant, Program

from .consumers import MESSAGE_KINDS, PAYOUT_PAID
from .models import Kind, NotificationPreference, SentNotification

log = logging.getLogger(__name__)

EXPIRY_NOTICE = timedelta(days=3)


class PreferenceError(ValueError):
    """A bad settings value; the message names the field."""


# --------------------------------------------------------------------------- preferences


def preferences_for(user) -> NotificationPreference:
    """The user's settings; an unsaved all-on row when the user never changed them."""
    return NotificationPreference.objects.filter(user=user).first() or NotificationPreference(user=user)


@transaction.atomic
def preferences_update(*, user, values: dict[str, bool], actor=None) -> NotificationPreference:
    unknown = set(values) - set(Kind.values)
    if unknown:
        raise PreferenceError(f"{sorted(unknown)[0]}: not a notification kind")
    for kind, value in values.items():
        if not isinstance(value, bool):
            raise PreferenceError(f"{kind}: must be true or false")
    preference, _ = NotificationPreference.objects.select_for_update().get_or_create(user=user)
    changed = {kind: value for kind, value in values.items() if getattr(preference, kind) != value}
    for kind, value in changed.items():
        setattr(preference, kind, value)
    if changed:
        preference.save()
        AuditLog.objects.create(actor=actor or user, action="notifications.update", object_type="user",
                                object_id=str(user.pk), data=changed)
    return preference


# --------------------------------------------------------------------------- sending


def _recipient(account_id: int, kind: str):
    """(account, user) when the account's login wants this kind and has an address, else None."""
    account = Account.objects.select_related("user").filter(pk=account_id).first()
    user = account.user if account else None
    if user is None or not user.email or not user.is_active:
        return None
    if not preferences_for(user).wants(kind):
        return None
    return account, user


def accounts_wanting(account_ids, kind: str) -> set[int]:
    """Of these accounts, those whose login wants this kind of e-mail (as `wants_email` decides
    one by one), with two queries whatever their number: for the outbox's batches."""
    users = dict(Account.objects.filter(pk__in=set(account_ids), user__is_active=True)
                 .exclude(user__email="").values_list("pk", "user_id"))
    if not users:
        return set()
    preferences = {p.user_id: p for p in NotificationPreference.objects.filter(user_id__in=set(users.values()))}
    return {account_id for account_id, user_id in users.items()
            if (preferences.get(user_id) or NotificationPreference()).wants(kind)}


def wants_email(account_id: int, kind: str) -> bool:
    return _recipient(account_id, kind) is not None


def _send(kind: str, user, context: dict) -> None:
    context = {**context, "user": user, "site_url": settings.SITE_URL,
               "settings_url": f"{settings.SITE_URL}/dashboard/notifications/", "currency": _symbol()}
    subject = " ".join(render_to_string(f"notifications/email/{kind}_subject.txt", context).split())
    body = render_to_string(f"notifications/email/{kind}.txt", context)
    send_mail(subject, body, None, [user.email])


def _symbol() -> str:
    currency = settings.REFERRAL["CURRENCY"]
    return {"USD": "$", "EUR": "€", "GBP": "£"}.get(currency, f"{currency} ")


def send_for_message(*, message_kind: str, account_id: int, data: dict) -> bool:
    """Send the e-mail for one outbox message if the user wants it. Returns whether one was sent."""
    kind = MESSAGE_KINDS.get(message_kind)
    if kind is None:
        raise ValueError(f"message_kind: {message_kind!r} has no e-mail")
    found = _recipient(account_id, kind)
    if found is None:
        return False
    account, user = found
    context = {"account": account, "data": data}
    if kind == Kind.APPLICATION_DECIDED:
        context["program"] = Program.objects.filter(key=data.get("program", "")).first()
    if kind == Kind.PAYOUT_STATUS:
        context["paid"] = message_kind == PAYOUT_PAID
    _send(kind, user, context)
    log.info("e-mail %s sent to account %s", kind, account_id)
    return True


def send_expiry_reminders(*, at: datetime) -> int:
    """Queue one reminder per account whose credits expire within 3 days of `at`.

    Set-based and idempotent: a few queries whatever the number of grants, and a grant is
    reminded once (a `SentNotification` per grant, claimed under a row lock so two runs at once
    do not both send). Returns the number of accounts reminded."""
    from .tasks import send_expiry_reminder

    with transaction.atomic():
        due = (CreditGrant.objects.filter(expired_at__isnull=True, remaining__gt=0, expires_at__gt=at,
                                          expires_at__lte=at + EXPIRY_NOTICE, account__user__isnull=False)
               .order_by("id"))
        # Lock first, then read the claims: a concurrent run waits here and then sees ours.
        locked = list(due.select_for_update(of=("self",)).values_list("id", "account_id"))
        keys = {f"credits-expiring:grant:{grant_id}": (grant_id, account_id) for grant_id, account_id in locked}
        claimed = set(SentNotification.objects.filter(key__in=list(keys)).values_list("key", flat=True))
        fresh = {key: value for key, value in keys.items() if key not in claimed}
        SentNotification.objects.bulk_create([
            SentNotification(key=key, kind=Kind.CREDITS_EXPIRING, account_id=account_id, created_at=at)
            for key, (_, account_id) in fresh.items()
        ])
        by_account: dict[int, list[int]] = {}
        for grant_id, account_id in fresh.values():
            by_account.setdefault(account_id, []).append(grant_id)
        for account_id, grant_ids in by_account.items():
            transaction.on_commit(lambda a=account_id, g=grant_ids: send_expiry_reminder.delay(a, g))
    return len(by_account)


def send_expiry_reminder(*, account_id: int, grant_ids: list[int]) -> bool:
    found = _recipient(account_id, Kind.CREDITS_EXPIRING)
    if found is None:
        return False
    account, user = found
    grants = CreditGrant.objects.filter(pk__in=grant_ids, account_id=account_id, expired_at__isnull=True,
                                        remaining__gt=0)
    summary = grants.aggregate(total=Sum("remaining"), first=Min("expires_at"))
    if not summary["total"]:
        return False  # spent or expired since the reminder was queued
    _send(Kind.CREDITS_EXPIRING, user, {"account": account, "amount": format_cents(summary["total"]),
                                        "expires_at": summary["first"]})
    return True
