"""Celery tasks: thin wrappers that take ids and call one service."""
from celery import shared_task

from . import services


# Sending is idempotent per message only as far as SMTP is; a retry after a timeout may
# send twice, which is the accepted trade-off for e-mail (better twice than never).
@shared_task(autoretry_for=(OSError,), retry_backoff=True, retry_kwargs={"max_retries": 5}, ignore_result=True)
def send_notification(message_kind: str, account_id: int, data: dict) -> bool:
    return services.send_for_message(message_kind=message_kind, account_id=account_id, data=data)


@shared_task(autoretry_for=(OSError,), retry_backoff=True, retry_kwargs={"max_retries": 5}, ignore_result=True)
def send_expiry_reminder(account_id: int, grant_ids: list[int]) -> bool:
    return services.send_expiry_reminder(account_id=account_id, grant_ids=grant_ids)


@shared_task(ignore_result=True)
def send_expiry_reminders() -> int:
    """Periodic (e.g. hourly on beat): reminders for credits expiring within 3 days."""
    from django.utils import timezone

    return services.send_expiry_reminders(at=timezone.now())
