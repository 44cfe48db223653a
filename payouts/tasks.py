"""Celery tasks of payouts: take an id, call one service. Queued on commit by the services."""
from celery import shared_task

from . import services


@shared_task(name="payouts.process_payout", acks_late=True, ignore_result=True)
def process_payout(payout_id: int) -> str:
    """Send an approved payout to its provider. Safe to deliver twice: the service claims the
    payout with a row lock and the provider call carries the payout's idempotency key; a payout
    left processing by a lost worker is picked up by `retry_stuck_payouts`."""
    return services.payout_process(payout_id=payout_id).status
