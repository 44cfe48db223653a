"""The Stripe billing connector: the operator's own Stripe account, the staff mapping of prices
and products to our event types, every Stripe object received (webhook or import) and the state
that keeps the turning of Stripe objects into our events idempotent."""
from django.db import models
from django.db.models import Q

from referrals.engine import events as ev

MAPPED_TYPES = (ev.PLAN_PURCHASED, ev.CREDITS_PURCHASED, ev.USAGE_CHARGED)


def mask(secret: str) -> str:
    """A secret as staff may see it again: its kind prefix and last four characters."""
    if not secret:
        return ""
    prefix = secret.split("_", 1)[0] + "_" if "_" in secret[:8] else ""
    return f"{prefix}…{secret[-4:]}" if len(secret) > 12 else "…"


class StripeConnection(models.Model):
    """The operator's Stripe account (one per deployment)."""

    signing_secret = models.CharField(max_length=200, help_text="The webhook endpoint's signing secret (whsec_…).")
    api_key = models.CharField(max_length=200, blank=True,
                               help_text="A restricted key (rk_…) with read access to customers, invoices, "
                                         "charges and payment intents (import_stripe, newer API versions).")
    account_metadata_key = models.CharField(
        max_length=40, default="account_id",
        help_text="The customer metadata key that holds your account id (the `account` of our events).")
    referral_code_metadata_key = models.CharField(max_length=40, default="referral_code")
    click_id_metadata_key = models.CharField(max_length=40, default="click_id")
    is_active = models.BooleanField(default=True, help_text="Untick to refuse every webhook (400).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # A bounded record of refused deliveries: one row, however many forged posts arrive.
    rejected_count = models.PositiveBigIntegerField(default=0)
    last_rejected_at = models.DateTimeField(null=True, blank=True)
    last_rejected_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        verbose_name = "Stripe connection"

    def __str__(self) -> str:
        return "Stripe connection" + ("" if self.is_active else " (inactive)")


class PriceMapping(models.Model):
    """What a Stripe price or product becomes in our event log; `charge` maps one-off charges."""

    connection = models.ForeignKey(StripeConnection, on_delete=models.CASCADE, related_name="mappings")
    stripe_id = models.CharField(max_length=120, unique=True,
                                 help_text="A price (price_…), a product (prod_…), or `charge` for one-off "
                                           "charges without an invoice. A price's row wins over its product's.")
    event_type = models.CharField(max_length=40, choices=[(t, t) for t in MAPPED_TYPES])
    product_line = models.CharField(max_length=60, blank=True,
                                    help_text="The plan (plan.purchased) or product line (usage.charged, e.g. "
                                              "serverless); not used for credits.purchased.")
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["stripe_id"]
        constraints = [
            models.CheckConstraint(condition=Q(event_type__in=MAPPED_TYPES), name="price_mapping_event_type"),
            models.CheckConstraint(condition=Q(event_type=ev.CREDITS_PURCHASED) | ~Q(product_line=""),
                                   name="price_mapping_product_line"),
        ]

    def __str__(self) -> str:
        return f"{self.stripe_id} → {self.event_type} {self.product_line}".strip()


class Inbound(models.Model):
    """One Stripe object as received: a verified webhook (keyed by the Stripe event id) or an
    object listed by import_stripe (keyed `import:<object id>`), with what became of it."""

    class Source(models.TextChoices):
        WEBHOOK = "webhook", "Webhook"
        IMPORT = "import", "import_stripe"

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        PROCESSED = "processed", "Processed"
        IGNORED = "ignored", "Ignored (nothing to do)"
        WAITING = "waiting", "Waiting (for its customer or charge)"
        NEEDS_MAPPING = "needs_mapping", "Needs a mapping"
        NEEDS_ATTENTION = "needs_attention", "Needs attention"
        FAILED = "failed", "Failed (an error; process again)"

    RETRYABLE = (Status.RECEIVED, Status.WAITING, Status.NEEDS_MAPPING, Status.NEEDS_ATTENTION, Status.FAILED)

    source = models.CharField(max_length=10, choices=Source.choices)
    key = models.CharField(max_length=200, unique=True, help_text="The Stripe event id, or import:<object id>.")
    type = models.CharField(max_length=80, help_text="The Stripe event type (an import: the object kind).")
    object_id = models.CharField(max_length=120, db_index=True)
    customer_id = models.CharField(max_length=120, blank=True, db_index=True)
    charge_id = models.CharField(max_length=120, blank=True, db_index=True)
    stripe_created = models.BigIntegerField(default=0, help_text="Stripe's `created` (Unix seconds).")
    body = models.TextField(help_text="The verified body as Stripe sent it (an import: the object).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED, db_index=True)
    note = models.TextField(blank=True)
    unmapped = models.JSONField(default=list, blank=True, help_text="Price and product ids without a mapping.")
    attempts = models.PositiveIntegerField(default=0)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "Stripe object received"
        verbose_name_plural = "Stripe objects received"

    def __str__(self) -> str:
        return f"{self.type} {self.object_id} ({self.status})"


class StripeCustomer(models.Model):
    """A Stripe customer and the operator account it is; staff may set the account by hand."""

    customer_id = models.CharField(max_length=120, unique=True)
    account = models.CharField(max_length=120, blank=True,
                               help_text="Our account id (the `account` of events); blank: not mapped yet.")
    email = models.CharField(max_length=254, blank=True)
    linked_at = models.DateTimeField(null=True, blank=True)
    stripe_created = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["customer_id"]
        verbose_name = "Stripe customer"

    def __str__(self) -> str:
        return f"{self.customer_id} → {self.account or '(not mapped)'}"


class Payment(models.Model):
    """A paid invoice or one-off charge turned into our purchase events, and how much of it has
    been refunded into the log so far; refunds and lost disputes are settled against it."""

    key = models.CharField(max_length=120, unique=True, help_text="The invoice id, or the charge id of a one-off.")
    charge_id = models.CharField(max_length=120, blank=True, db_index=True)
    customer_id = models.CharField(max_length=120)
    account = models.CharField(max_length=120)
    amount = models.BigIntegerField(help_text="Stripe minor units.")
    currency = models.CharField(max_length=3)
    # [[our event id, minor units], ...] in line order; refunds fill them in that order.
    events = models.JSONField(default=list)
    refunded = models.BigIntegerField(default=0, help_text="Minor units refunded into our log so far.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(refunded__gte=0) & Q(refunded__lte=models.F("amount")),
                                   name="billing_payment_refunded_in_range"),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.amount} {self.currency})"


class ChargeState(models.Model):
    """What Stripe has told us about refunds of a charge: the highest `amount_refunded` seen."""

    charge_id = models.CharField(max_length=120, unique=True)
    amount_refunded = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.charge_id}: {self.amount_refunded} refunded"


class RefundSeen(models.Model):
    """A refund object (re_…) or a lost dispute (dp_…) of a charge."""

    object_id = models.CharField(max_length=120, unique=True)
    charge_id = models.CharField(max_length=120, db_index=True)
    kind = models.CharField(max_length=10)  # refund | dispute
    amount = models.BigIntegerField()
    counts = models.BooleanField(help_text="A succeeded or pending refund, or a lost dispute.")

    def __str__(self) -> str:
        return f"{self.kind} {self.object_id} of {self.charge_id}"


class ImportCursor(models.Model):
    """Where import_stripe is in one object list, so an interrupted run resumes there."""

    object_type = models.CharField(max_length=20, unique=True)
    since = models.BigIntegerField(help_text="The --since of the run (Unix seconds).")
    starting_after = models.CharField(max_length=120, blank=True, help_text="The last object done.")
    done = models.BooleanField(default=False)
    count = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.object_type}: {'done' if self.done else self.starting_after or 'not started'}"
