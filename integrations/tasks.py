"""Celery tasks of outbound webhooks: they take ids and call one service."""
from celery import current_app, shared_task

from . import services


@shared_task(name="integrations.deliver_webhook", ignore_result=True)
def deliver_webhook(delivery_id: int) -> None:
    delivery = services.webhook_deliver(delivery_id=delivery_id)
    # The task owns its retries: the next attempt is queued for when the backoff ends. Run
    # eagerly (no broker) a countdown would not wait, so there the sweep retries instead.
    if delivery is not None and delivery.next_attempt_at and not current_app.conf.task_always_eager:
        deliver_webhook.apply_async((delivery_id,), eta=delivery.next_attempt_at)


@shared_task(name="integrations.deliver_due_webhooks", ignore_result=True)
def deliver_due_webhooks() -> int:
    """Every minute under beat: retries that are due and deliveries whose task was lost."""
    return services.deliver_due()
