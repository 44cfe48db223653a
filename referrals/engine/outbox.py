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
BatchConsumer = Callable[[list[tuple[str, int, dict]]], None]
_consumers: list[tuple[Consumer, BatchConsumer | None]] = []


def subscribe(consumer: Consumer, *, many: BatchConsumer | None = None) -> None:
    """`consumer(kind, *, account_id, data)` is called after commit for every message. A consumer
    that can take a batch at once (one query for all of them) also gives `many(messages)`, called
    with the messages of one `publish_many` as `(kind, account_id, data)` tuples."""
    if all(consumer is not known for known, _ in _consumers):
        _consumers.append((consumer, many))


def unsubscribe(consumer: Consumer) -> None:
    _consumers[:] = [(known, many) for known, many in _consumers if known is not consumer]


def publish(kind: str, *, account_id: int, data: dict) -> None:
    transaction.on_commit(partial(_deliver, kind, account_id, data))


def publish_many(messages: list[tuple[str, int, dict]]) -> None:
    """Publish messages in this order, delivered after commit with one callback (the engine's
    batches: a savepoint rolled back takes the callback, so all of them, with it)."""
    if messages:
        transaction.on_commit(partial(_deliver_many, list(messages)))


def _deliver(kind: str, account_id: int, data: dict) -> None:
    for consumer, _ in list(_consumers):
        _call(consumer, kind, account_id, data)


def _deliver_many(messages: list[tuple[str, int, dict]]) -> None:
    for consumer, many in list(_consumers):
        if many is None:
            for kind, account_id, data in messages:
                _call(consumer, kind, account_id, data)
            continue
        try:
            many(messages)
        except Exception:  # logged with its traceback; the other consumers still get the messages
            log.exception("outbox consumer %r failed on a batch of %d messages", many, len(messages))


def _call(consumer: Consumer, kind: str, account_id: int, data: dict) -> None:
    try:
        consumer(kind, account_id=account_id, data=data)
    except Exception:  # logged with its traceback; the other consumers still get the message
        log.exception("outbox consumer %r failed on %s for account %s", consumer, kind, account_id)
