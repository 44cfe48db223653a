"""The outbox consumer: turns the domain messages users care about into queued e-mail tasks."""
import logging

from referrals.engine import outbox

from .models import Kind

log = logging.getLogger(__name__)

# Outbox message kind -> notification kind. The payout kinds are published by `payouts`.
PAYOUT_PAID = "payout.paid"
PAYOUT_FAILED = "payout.failed"
MESSAGE_KINDS = {
    outbox.REFERRAL_CREATED: Kind.REFERRAL_SIGNED_UP,
    outbox.APPLICATION_DECIDED: Kind.APPLICATION_DECIDED,
    PAYOUT_PAID: Kind.PAYOUT_STATUS,
    PAYOUT_FAILED: Kind.PAYOUT_STATUS,
}


def on_outbox_message(kind: str, *, account_id: int, data: dict) -> None:
    """Called after commit. Queues one task when the account's login wants this kind of e-mail;
    the task checks again when it runs (the setting may change while it waits)."""
    if kind not in MESSAGE_KINDS:
        return
    from .services import wants_email
    from .tasks import send_notification

    if wants_email(account_id, MESSAGE_KINDS[kind]):
        send_notification.delay(kind, account_id, data)


def on_outbox_messages(messages: list[tuple[str, int, dict]]) -> None:
    """The same for a batch of messages (the engine's runs publish many at once): who wants
    each kind is read once per kind, not once per message."""
    relevant = [(kind, account_id, data) for kind, account_id, data in messages if kind in MESSAGE_KINDS]
    if not relevant:
        return
    from .services import accounts_wanting
    from .tasks import send_notification

    wanting = {kind: accounts_wanting({a for k, a, _ in relevant if k == kind}, MESSAGE_KINDS[kind])
               for kind in {kind for kind, _, _ in relevant}}
    for kind, account_id, data in relevant:
        if account_id in wanting[kind]:
            send_notification.delay(kind, account_id, data)
