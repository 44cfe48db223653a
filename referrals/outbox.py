"""Messages for the outside world — integrations' webhooks, users' e-mails — published by the
services and delivered only after the transaction that caused them commits.

Consumers subscribe explicitly in their app's `ready()`; a failing consumer is logged and does
not stop the others (the business change has already committed by then).
"""
import logging
from collections.abc import Callable
from functools import partial

from django.db import transaction

log = logging.getLogger(__name__)

# Kinds published so far; consumers may ignore the ones they do not care about.
REFERRAL_CREATED = "referral.created"
REFERRAL_CONVERTED = "referral.converted"
COMMISSION_CREATED = "commission.created"
COMMISSION_RELEASED = "commission.released"
APPLICATION_DECIDED = "application.decided"

Consumer = Callable[..., None]
_consumers: list[Consumer] = []


def subscribe(consumer: Consumer) -> None:
    """`consumer(kind, *, account_id, data)` is called after commit for every message."""
    if consumer not in _consumers:
        _consumers.append(consumer)


def publish(kind: str, *, account_id: int, data: dict) -> None:
    transaction.on_commit(partial(_deliver, kind, account_id, data))


def _deliver(kind: str, account_id: int, data: dict) -> None:
    for consumer in list(_consumers):
        try:
            consumer(kind, account_id=account_id, data=data)
        except Exception:  # logged with its traceback; the other consumers still get the message
            log.exception("outbox consumer %r failed on %s for account %s", consumer, kind, account_id)
