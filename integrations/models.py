"""Outbound webhooks: endpoints staff register in the admin, and every delivery attempt's outcome."""
import secrets
import uuid

from django.db import models
from django.db.models import Q

from referrals.models import Account

WEBHOOK_KINDS = (
    "referral.created", "referral.converted", "commission.created", "commission.released",
    "payout.paid", "payout.failed",
)


def new_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


class WebhookEndpoint(models.Model):
    """An integration's URL that receives signed POSTs for the kinds it subscribed to."""

    url = models.URLField(max_length=500)
    description = models.CharField(max_length=200, blank=True)
    secret = models.CharField(max_length=100, default=new_secret,
                              help_text="Signs every delivery (HMAC-SHA256); give it to the receiver.")
    kinds = models.JSONField(default=list, blank=True,
                             help_text=f"Kinds to send (empty: all): {', '.join(WEBHOOK_KINDS)}.")
    account = models.ForeignKey(Account, null=True, blank=True, on_delete=models.CASCADE,
                                help_text="A partner's endpoint: only messages about this account.")
    is_active = models.BooleanField(default=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.description or self.url

    def wants(self, kind: str, account_id: int | None) -> bool:
        if not self.is_active or (self.kinds and kind not in self.kinds):
            return False
        return self.account_id is None or self.account_id == account_id


class WebhookDelivery(models.Model):
    """One message to one endpoint, with the outcome of its latest attempt."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RETRYING = "retrying", "Retrying"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    # The message's id, the same for a redelivery, so a receiver can deduplicate.
    message_id = models.UUIDField(default=uuid.uuid4, db_index=True)
    kind = models.CharField(max_length=40)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True)
    error = models.CharField(max_length=500, blank=True)
    redelivery_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"])]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["pending", "retrying", "succeeded", "failed"]),
                                   name="webhook_delivery_status"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} to {self.endpoint_id} ({self.status})"
