"""Payout methods, payouts and the raw Stripe webhook deliveries.

A payout's money lives in the ledger (cash → reserved → platform:payouts, or back to cash);
these rows hold its lifecycle and the provider's references.
"""
from django.conf import settings
from django.db import models
from django.db.models import Q

from ledger.money import CENT


class MethodType(models.TextChoices):
    STRIPE = "stripe", "Stripe Connect"
    PAYPAL = "paypal", "PayPal"
    WISE = "wise", "Wise"


def mask(value: str, *, keep: int = 4) -> str:
    """Only the last characters of a secret-ish value: "acct_1Nabc1234" -> "••••1234"."""
    value = value or ""
    if len(value) <= keep:
        return "•" * len(value)
    return "••••" + value[-keep:]


def mask_email(email: str) -> str:
    """An e-mail with only the first letter and the domain's last characters: "a•••@••••e.com"."""
    local, _, domain = (email or "").partition("@")
    return f"{local[:1]}•••@{mask(domain, keep=5)}"


class PayoutMethod(models.Model):
    """Where an account's payouts go. One method per type; registering again replaces the details.

    `details` holds what the provider needs (e-mail, recipient id, connected account id); pages
    and API answers only ever show `masked`.
    """

    account = models.ForeignKey("referrals.Account", on_delete=models.PROTECT, related_name="payout_methods")
    type = models.CharField(max_length=10, choices=MethodType.choices)
    details = models.JSONField(default=dict)
    masked = models.CharField(max_length=80)
    # Stripe Connect: whether the connected account can receive transfers (onboarding done).
    ready = models.BooleanField(default=True)
    # The Stripe event time of the status we hold, so an older account.updated never wins.
    status_updated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account_id", "type"]
        constraints = [models.UniqueConstraint(fields=["account", "type"], name="payout_method_one_per_type")]

    def __str__(self) -> str:
        return f"{self.get_type_display()} {self.masked}"

    @property
    def stripe_account_id(self) -> str:
        return self.details.get("connected_account", "")


class PayoutQuerySet(models.QuerySet):
    def open(self):
        return self.filter(status__in=Payout.OPEN_STATUSES)

    def for_account(self, account):
        return self.filter(account=account)


class Payout(models.Model):
    class Status(models.TextChoices):
        REQUESTED = "requested", "Requested"
        APPROVED = "approved", "Approved"
        PROCESSING = "processing", "Processing"
        PAID = "paid", "Paid"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected"
        CANCELLED = "cancelled", "Cancelled"

    # Statuses in which the amount sits in the reserved book.
    OPEN_STATUSES = (Status.REQUESTED, Status.APPROVED, Status.PROCESSING)
    FINAL_STATUSES = (Status.PAID, Status.REJECTED, Status.CANCELLED)

    account = models.ForeignKey("referrals.Account", on_delete=models.PROTECT, related_name="payouts")
    method = models.ForeignKey(PayoutMethod, on_delete=models.PROTECT, related_name="payouts")
    method_type = models.CharField(max_length=10, choices=MethodType.choices)
    amount = models.BigIntegerField(help_text="Ledger units, a whole number of cents.")
    # Which programmes' cash it takes: [[program_id, units], ...] (see docs/payouts.md).
    allocation = models.JSONField(default=list)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.REQUESTED, db_index=True)
    # Bumped only when a definitively failed payout is retried: the provider idempotency key is
    # derived from (id, attempt), so retries after a crash or timeout reuse the same key.
    attempt = models.PositiveIntegerField(default=1)
    provider_reference = models.CharField(max_length=120, blank=True, db_index=True)
    failure_reason = models.TextField(blank=True)
    # The last retryable provider error (timeout, 5xx); the payout stays processing and is retried.
    last_error = models.TextField(blank=True)
    # How much of this attempt's transfer the provider has reversed so far (Stripe's cumulative
    # `amount_reversed`, in ledger units); each partial reversal moves only the increase.
    reversed_amount = models.BigIntegerField(default=0)
    # Why the payout was stopped before it went out (its account's cash went negative, e.g. a
    # refund clawback after the request): it waits, requested, for staff. Empty when not held.
    held_reason = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="+")
    requested_at = models.DateTimeField()
    # Maker-checker (settings.PAYOUT_SECOND_APPROVAL_ABOVE): a large payout stays requested after
    # its first approval, which is recorded here; only a different approver can approve it.
    first_approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                          related_name="+")
    first_approved_by_key = models.ForeignKey("referrals.ApiKey", null=True, blank=True, on_delete=models.PROTECT,
                                              related_name="+", help_text="When the first approval came via the API.")
    first_approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+", help_text="The staff member whose approval released it.")
    approved_at = models.DateTimeField(null=True, blank=True)
    processing_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = PayoutQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "processing_at"])]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="payout_amount_positive"),
            models.CheckConstraint(condition=Q(amount__gte=CENT), name="payout_amount_at_least_a_cent"),
            models.CheckConstraint(condition=Q(status__in=["requested", "approved", "processing", "paid", "failed",
                                                           "rejected", "cancelled"]),
                                   name="payout_status_known"),
            models.CheckConstraint(condition=Q(attempt__gte=1), name="payout_attempt_positive"),
            models.CheckConstraint(condition=Q(reversed_amount__gte=0) & Q(reversed_amount__lte=models.F("amount")),
                                   name="payout_reversed_within_amount"),
            # One approver can never be both maker and checker.
            models.CheckConstraint(condition=Q(first_approved_by__isnull=True) | Q(approved_by__isnull=True)
                                   | ~Q(first_approved_by=models.F("approved_by")),
                                   name="payout_two_different_approvers"),
        ]

    def __str__(self) -> str:
        return f"payout #{self.pk} ({self.status})"

    @property
    def awaiting_second_approval(self) -> bool:
        return self.status == Payout.Status.REQUESTED and self.first_approved_at is not None

    @property
    def idempotency_key(self) -> str:
        return f"payout-{self.pk}-attempt-{self.attempt}"


class PayoutTransition(models.Model):
    """The audit trail of one payout: every status change, who made it, when and why."""

    payout = models.ForeignKey(Payout, on_delete=models.PROTECT, related_name="transitions")
    from_status = models.CharField(max_length=12, blank=True)
    to_status = models.CharField(max_length=12)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                              related_name="+")
    source = models.CharField(max_length=20, help_text="user, staff, api, auto, provider, webhook, job")
    reason = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"payout #{self.payout_id}: {self.from_status or '-'} -> {self.to_status}"


class StripeWebhook(models.Model):
    """One delivery of a Stripe webhook, stored raw before anything else happens to it."""

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        PROCESSED = "processed", "Processed"
        DUPLICATE = "duplicate", "Duplicate (already processed)"
        IGNORED = "ignored", "Ignored (nothing to do)"
        REJECTED = "rejected", "Rejected (signature)"
        FAILED = "failed", "Failed (will be retried by Stripe)"

    body = models.TextField()
    headers = models.JSONField(default=dict)
    event_id = models.CharField(max_length=120, blank=True, db_index=True)
    type = models.CharField(max_length=80, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # Idempotency by event id: at most one delivery of an event is ever processed.
            models.UniqueConstraint(fields=["event_id"], condition=Q(status="processed"),
                                    name="stripe_webhook_processed_once"),
        ]

    def __str__(self) -> str:
        return f"{self.type or 'webhook'} {self.event_id or '#' + str(self.pk)} ({self.status})"
