"""Accounts, attribution, programmes (as data), the event log and what events earn."""
import secrets
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from ledger.models import Book

CODE_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
CODE_LENGTH = 8


def new_referral_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


class Track(models.TextChoices):
    BASIC = "basic", "Basic"
    PARTNER = "partner", "Partner"


class ProgramQuerySet(models.QuerySet):
    """Edits in code go through here too: `update` and `bulk_create` record the new versions
    (`referrals.engine.versions`) in the same transaction, like `Program.save`."""

    def update(self, **kwargs):
        from .engine import versions

        with transaction.atomic(using=self.db):
            ids = list(self.values_list("pk", flat=True))
            if "kind" in kwargs and self.model.objects.filter(pk__in=ids).exclude(kind=kwargs["kind"]).exists():
                raise ValidationError({"kind": Program.KIND_FIXED})
            count = super().update(**kwargs)
            versions.record(ids)
        return count

    def bulk_create(self, objs, *args, **kwargs):
        from .engine import versions

        with transaction.atomic(using=self.db):
            created = super().bulk_create(objs, *args, **kwargs)
            versions.record([obj.pk for obj in created if obj.pk is not None])
        return created


class Program(models.Model):
    """One referral programme. Every rate, threshold, window and ratio is a field here.

    The row is the programme's newest configuration; every saved change is also a
    `ProgramVersion` with the time it takes effect, and the engine applies each event with the
    version in force at its time (`referrals.engine.versions`).
    """

    KIND_FIXED = "cannot change once the programme exists (its accruals depend on it); create a new programme"

    class Kind(models.TextChoices):
        REVENUE_SHARE = "revenue_share", "Revenue share on referred spend"
        PURCHASE_COMMISSION = "purchase_commission", "Commission on referred purchases"
        MILESTONE = "milestone", "Spend milestone bonus"
        TEMPLATE_SHARE = "template_share", "Template creator revenue share"
        SIGNUP_CREDIT = "signup_credit", "Sign-up credit for referred accounts"

    class PaysIn(models.TextChoices):
        CREDITS = Book.CREDITS.value, "Platform credits"
        CASH = Book.CASH.value, "Cash"

    percent = [MinValueValidator(0), MaxValueValidator(100)]
    non_negative = [MinValueValidator(0)]

    key = models.SlugField(max_length=60, unique=True)
    preset = models.CharField(max_length=30, blank=True)
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=30, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True)

    # What earns: event types counted and, optionally, one product line.
    event_types = models.JSONField(default=list, blank=True)
    product = models.CharField(max_length=60, blank=True)

    # Rates are percents with two decimals (2.00 = 2 %).
    rate = models.DecimalField(max_digits=5, decimal_places=2, default=0, validators=percent)
    pays_in = models.CharField(max_length=20, choices=PaysIn.choices, default=PaysIn.CREDITS)
    partner_rate = models.DecimalField(max_digits=5, decimal_places=2, null=True, blank=True, validators=percent)
    partner_pays_in = models.CharField(max_length=20, choices=PaysIn.choices, blank=True)

    # Gate: referrer needs this many referred accounts and their spend, then staff approval.
    requires_approval = models.BooleanField(default=False)
    gate_min_referrals = models.PositiveIntegerField(default=0)
    gate_min_spend = models.DecimalField(max_digits=14, decimal_places=2, default=0, validators=non_negative)
    # Template gate: cumulative runtime before a template's earnings are released.
    template_min_runtime_hours = models.DecimalField(
        max_digits=10, decimal_places=2, default=0, validators=non_negative
    )

    # Milestone: a referred account's spend on `product` reaching the threshold pays both sides.
    milestone_threshold = models.DecimalField(max_digits=14, decimal_places=2, default=0, validators=non_negative)
    referrer_bonus = models.DecimalField(max_digits=14, decimal_places=2, default=0, validators=non_negative)
    referred_bonus = models.DecimalField(max_digits=14, decimal_places=2, default=0, validators=non_negative)

    # Sign-up credit for the referred account, valid for a number of days.
    signup_credit = models.DecimalField(max_digits=14, decimal_places=2, default=0, validators=non_negative)
    credit_valid_days = models.PositiveIntegerField(default=0)

    # Holding period before earnings become available (0: none).
    hold_days = models.PositiveIntegerField(default=0)

    # Cash-out rules.
    cashout_percent = models.DecimalField(
        max_digits=5, decimal_places=2, default=0, validators=percent,
        help_text="Share of credit earnings that may be withdrawn as cash (75 = 75 %).",
    )
    own_credits_block_cashout = models.BooleanField(
        default=False, help_text="Cash is not withdrawable while the referrer holds purchased credits."
    )
    min_payout = models.DecimalField(max_digits=14, decimal_places=2, default=0, validators=non_negative)
    payout_methods = models.JSONField(default=list, blank=True)

    updated_at = models.DateTimeField(auto_now=True)

    objects = ProgramQuerySet.as_manager()

    class Meta:
        ordering = ["preset", "key"]
        constraints = [
            models.CheckConstraint(condition=Q(rate__gte=0, rate__lte=100), name="program_rate_percent"),
            models.CheckConstraint(condition=Q(cashout_percent__gte=0, cashout_percent__lte=100),
                                   name="program_cashout_percent"),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        from .engine import versions

        if getattr(self, "version", None) is not None:
            raise TypeError("a programme version (from referrals.engine.versions) is read-only; edit the Program row")
        with transaction.atomic(using=kwargs.get("using")):
            super().save(*args, **kwargs)
            versions.record([self.pk])

    def clean(self):
        super().clean()
        if self.pk is not None and not self._state.adding:
            kind = Program.objects.filter(pk=self.pk).values_list("kind", flat=True).first()
            if kind is not None and kind != self.kind:
                raise ValidationError({"kind": self.KIND_FIXED})


class ProgramVersion(models.Model):
    """One configuration of a programme and the time from which it is in force.

    `config` holds every configuration field of `Program` (decimals as strings). Versions are
    only appended: number 1 is the programme as created, each saved change adds the next.
    """

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    effective_at = models.DateTimeField(help_text="In force for events and jobs at or after this time.")
    config = models.JSONField()
    source = models.CharField(max_length=20, blank=True, help_text="admin, load_preset, code or migration")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["program", "-number"]
        constraints = [models.UniqueConstraint(fields=["program", "number"], name="program_version_once")]

    def __str__(self) -> str:
        return f"{self.program} v{self.number}"


class Account(models.Model):
    """An operator account (by its external id), optionally linked to a portal login."""

    external_id = models.CharField(max_length=120, unique=True)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="referral_account"
    )
    email = models.EmailField(blank=True)
    email_normalized = models.CharField(max_length=254, blank=True, db_index=True)
    referral_code = models.CharField(max_length=CODE_LENGTH, unique=True, default=new_referral_code)
    code_enabled = models.BooleanField(default=True)
    track = models.CharField(max_length=10, choices=Track.choices, default=Track.BASIC)
    signup_ip = models.GenericIPAddressField(null=True, blank=True)
    device_id = models.CharField(max_length=120, blank=True)
    # Credits the account bought itself and has not spent yet (ledger units), for the
    # "own purchased credits block cash-out" rule.
    purchased_credits = models.BigIntegerField(default=0)
    signed_up_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.external_id

    @property
    def referral_link(self) -> str:
        return f"{settings.SITE_URL}/?ref={self.referral_code}"


class TrackChange(models.Model):
    """When an account's commission track changed; rates follow the track at purchase time."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="track_changes")
    track = models.CharField(max_length=10, choices=Track.choices)
    effective_at = models.DateTimeField()
    event = models.ForeignKey("Event", on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["effective_at", "id"]

    def __str__(self) -> str:
        return f"{self.account} -> {self.track} at {self.effective_at:%Y-%m-%d %H:%M}"


class Template(models.Model):
    external_id = models.CharField(max_length=120, unique=True)
    creator = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="templates")
    name = models.CharField(max_length=200, blank=True)
    runtime_seconds = models.BigIntegerField(default=0)
    qualified_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name or self.external_id

    @property
    def referral_link(self) -> str:
        return f"{settings.SITE_URL}/t/{self.external_id}?ref={self.creator.referral_code}"


class Click(models.Model):
    # Made by the web process before the row exists (clicks are written in batches after the
    # answer, referrals.attribution.clicks): the attribution cookie and `click_id` of sign-ups carry it.
    public_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    referrer = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="clicks")
    visitor_id = models.CharField(max_length=64)
    ip_hash = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    path = models.CharField(max_length=300, blank=True)
    template = models.ForeignKey(Template, null=True, blank=True, on_delete=models.SET_NULL)
    is_unique = models.BooleanField(default=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["referrer", "visitor_id", "created_at"])]

    def __str__(self) -> str:
        return f"click #{self.pk} for {self.referrer_id}"


class Referral(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending (no purchase yet)"
        CONVERTED = "converted", "Converted"
        INELIGIBLE = "ineligible", "Ineligible"

    referrer = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="referrals")
    referred = models.OneToOneField(Account, on_delete=models.PROTECT, related_name="referred_by")
    click = models.ForeignKey(Click, null=True, blank=True, on_delete=models.SET_NULL)
    template = models.ForeignKey(Template, null=True, blank=True, on_delete=models.SET_NULL)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    ineligible_reason = models.CharField(max_length=200, blank=True)
    spend = models.BigIntegerField(default=0, help_text="Net usage spend (ledger units).")
    spend_by_product = models.JSONField(
        default=dict, db_default=models.Value({}, output_field=models.JSONField()), blank=True,
        help_text="Net usage spend per product (ledger units): what a product milestone counts, kept by the engine "
                  "and refunds so that applying a charge never sums the account's history.")
    purchases = models.BigIntegerField(default=0, help_text="Net purchases (ledger units).")
    converted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["referrer", "status"]),
            # The dashboard's referral list: newest first, a page of ids straight off the index.
            models.Index(fields=["referrer", "-created_at", "-id"], name="referral_referrer_newest"),
        ]
        constraints = [
            models.CheckConstraint(condition=~Q(referrer=models.F("referred")), name="referral_not_self"),
        ]

    def __str__(self) -> str:
        return f"{self.referrer} -> {self.referred}"


class FraudFlagQuerySet(models.QuerySet):
    def open(self):
        return self.filter(status=FraudFlag.Status.OPEN)


class FraudFlag(models.Model):
    """A referral, or a whole account, held for staff review, with the signals that fired.

    A referral flag holds what its referrer earned through that referral. An account flag (for
    example two referrers paid to one payout destination) holds the account's payouts: none is
    auto-approved, approved or sent while the flag is open.
    """

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        CLEARED = "cleared", "Cleared"
        CONFIRMED = "confirmed", "Confirmed fraud"

    referral = models.ForeignKey(Referral, null=True, blank=True, on_delete=models.CASCADE,
                                 related_name="fraud_flags")
    account = models.ForeignKey(Account, null=True, blank=True, on_delete=models.CASCADE,
                                related_name="fraud_flags")
    signals = models.JSONField(default=list)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    reason = models.TextField(blank=True)

    objects = FraudFlagQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(referral__isnull=False, account__isnull=True)
                           | models.Q(referral__isnull=True, account__isnull=False)),
                name="fraud_flag_referral_or_account"),
        ]

    def __str__(self) -> str:
        return f"flag #{self.pk} ({self.status})"


class PaymentFingerprint(models.Model):
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="fingerprints")
    fingerprint = models.CharField(max_length=200, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "fingerprint"], name="fingerprint_once")]

    def __str__(self) -> str:
        return f"{self.account_id}: …{self.fingerprint[-4:]}"


class Event(models.Model):
    """The event log: every external event and every internal action that moves value.

    The ledger is a function of this log, applied in `id` order (see `verify_ledger`).
    """

    class Source(models.TextChoices):
        API = "api", "API"
        PORTAL = "portal", "Portal"
        STAFF = "staff", "Staff"
        JOB = "job", "Periodic job"

    # Every index of the log is written by each stored event and again by its claim (the
    # `applied_at` UPDATE cannot be HOT: the pending index names it), so the log has no index
    # it does not need: the unique external id and the type are plain btrees (no `_like`
    # copies, which only a LIKE would use), and (account, type) serves lookups by account.
    external_id = models.CharField(max_length=200)
    type = models.CharField(max_length=40)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.API)
    account = models.ForeignKey(Account, null=True, blank=True, on_delete=models.PROTECT, related_name="events",
                                db_index=False)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    payload = models.JSONField(default=dict)
    content_hash = models.CharField(max_length=64)
    amount = models.BigIntegerField(null=True, blank=True)
    product = models.CharField(max_length=60, blank=True)
    template = models.ForeignKey(Template, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    refunds = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="refund_events")
    refunded = models.BigIntegerField(default=0, help_text="Sum of refunds against this event (ledger units).")
    runtime_seconds = models.PositiveBigIntegerField(default=0)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    # When its effects were applied. Batch ingestion stores stateless money events first (null
    # here) and applies them right after, in id order (referrals.engine.ingestion); everything else is
    # applied in the transaction that stores it, hence the default.
    applied_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    apply_error = models.TextField(blank=True, help_text="Why applying a stored event failed (it is then skipped).")
    # Fields of an accepted event that were ignored, as answered to the sender ({"field", "code",
    # "message"}): a replay ignores them too (referrals.engine.steps, account.created).
    warnings = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["account", "type"]),
            models.Index(fields=["type"], name="event_type"),
            models.Index(fields=["id"], condition=Q(applied_at__isnull=True), name="event_pending_apply"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__isnull=True) | Q(amount__gt=0), name="event_amount_positive"),
            models.CheckConstraint(condition=Q(refunded__gte=0), name="event_refunded_non_negative"),
            models.UniqueConstraint(fields=["external_id"], name="event_external_id_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.external_id}"


class Accrual(models.Model):
    """What one event earned one beneficiary under one programme, and where it sits now."""

    class State(models.TextChoices):
        HELD = "held", "Held (pending)"
        RELEASED = "released", "Released"
        VOID = "void", "Void"

    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="accruals")
    # The `ProgramVersion.number` of `program` whose rules made this accrual (no FK: no index
    # and no constraint check on the engine's hottest insert; (program, number) is unique).
    program_version = models.PositiveIntegerField(null=True, blank=True)
    rule = models.CharField(max_length=80)
    beneficiary = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="accruals")
    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="accruals")
    referral = models.ForeignKey(Referral, null=True, blank=True, on_delete=models.PROTECT, related_name="accruals")
    template = models.ForeignKey(Template, null=True, blank=True, on_delete=models.PROTECT, related_name="accruals")
    amount = models.BigIntegerField()
    reversed = models.BigIntegerField(default=0)
    destination = models.CharField(max_length=20, choices=Program.PaysIn.choices)
    track = models.CharField(max_length=10, choices=Track.choices, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.HELD)
    held_for_gate = models.BooleanField(default=False)
    held_for_template = models.BooleanField(default=False)
    held_for_fraud = models.BooleanField(default=False)
    held_until = models.DateTimeField(null=True, blank=True)
    # Sign-up credits expire; the grant's expiry travels with the accrual until release.
    expires_days = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField()
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        # Only held accruals are looked up by state (the hold release, the held totals per
        # beneficiary and programme), so those indexes hold only them: a released accrual, and
        # the release's new row version, add no entry to them (migration 0010).
        indexes = [
            models.Index(fields=["beneficiary", "program"], condition=Q(state="held"),
                         name="accrual_held_by_beneficiary"),
            models.Index(fields=["held_until"], condition=Q(state="held"), name="accrual_held_until"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="accrual_amount_positive"),
            models.CheckConstraint(condition=Q(reversed__gte=0) & Q(reversed__lte=models.F("amount")),
                                   name="accrual_reversed_within_amount"),
        ]

    def __str__(self) -> str:
        return f"accrual #{self.pk} {self.rule}"

    @property
    def net(self) -> int:
        return self.amount - self.reversed


class CreditGrant(models.Model):
    """Credits that expire (sign-up credit): what is left of them and when they lapse."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="credit_grants")
    accrual = models.OneToOneField(Accrual, on_delete=models.PROTECT, related_name="grant")
    amount = models.BigIntegerField()
    remaining = models.BigIntegerField()
    expires_at = models.DateTimeField(db_index=True)
    expired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["expires_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(remaining__gte=0) & Q(remaining__lte=models.F("amount")),
                                   name="grant_remaining_within_amount"),
        ]

    def __str__(self) -> str:
        return f"grant #{self.pk} for {self.account_id}"


class MilestoneAward(models.Model):
    """A milestone paid once per referred account and programme."""

    program = models.ForeignKey(Program, on_delete=models.PROTECT)
    referral = models.ForeignKey(Referral, on_delete=models.PROTECT, related_name="milestones")
    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["program", "referral"], name="milestone_once")]

    def __str__(self) -> str:
        return f"milestone {self.program_id} for referral {self.referral_id}"


class Application(models.Model):
    """A referrer that met a programme's gate, waiting for (or given) staff approval."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="applications")
    # The `ProgramVersion.number` whose gate the referrer met (the one in force at the job's time).
    program_version = models.PositiveIntegerField(null=True, blank=True)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="applications")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    referrals_at_open = models.PositiveIntegerField(default=0)
    spend_at_open = models.BigIntegerField(default=0)
    opened_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["program", "account"], name="application_once")]

    def __str__(self) -> str:
        return f"application #{self.pk} ({self.status})"


class AuditLog(models.Model):
    """Who did what, when and why: every staff decision and every status change."""

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    action = models.CharField(max_length=60)
    object_type = models.CharField(max_length=60)
    object_id = models.CharField(max_length=60)
    reason = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type} {self.object_id}"


class JobRun(models.Model):
    name = models.CharField(max_length=60)
    at = models.DateTimeField()
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.name} at {self.at:%Y-%m-%d %H:%M}"


class ApiKey(models.Model):
    """An integration key. Only a SHA-256 of the secret is stored; the key is shown once."""

    class Scope(models.TextChoices):
        EVENTS_WRITE = "events:write", "Push events"
        READ = "read", "Read accounts and stats"
        STAFF = "staff", "Staff actions"

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, unique=True)
    hashed_key = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    account = models.ForeignKey(
        Account, null=True, blank=True, on_delete=models.CASCADE,
        help_text="A partner's own key: reads only this account's data.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    # DRF treats the key as the request's auth object; these make permission checks read well.
    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class EarningsRollup(models.Model):
    """Sums of accruals per beneficiary, programme, template, UTC month of the accrual, state and
    whether the beneficiary is the referred account itself: the dashboard's totals, programme
    table and chart read these few thousand rows instead of a referrer's million accruals.

    Written only by database triggers on `Accrual` (migration `earnings_rollup`): each insert,
    update or delete of accruals adds signed delta rows in the same statement, so the rollup
    moves in the same transaction as the ledger legs, whatever writes the accruals (services,
    set-based jobs, bulk loads). Rows are only ever inserted, so two writers never wait on one
    row; the `compact_rollups` job merges each key's deltas. `rollups.earnings_differences`
    checks it against the accruals and the ledger.
    """

    beneficiary_id = models.BigIntegerField()
    program_id = models.BigIntegerField()
    template_id = models.BigIntegerField(null=True)
    month = models.DateField(help_text="First day of the UTC month of the accrual.")
    state = models.CharField(max_length=10)
    as_referred = models.BooleanField()
    accruals = models.BigIntegerField()
    amount = models.BigIntegerField()
    reversed = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["beneficiary_id", "month"], name="earningsrollup_account_month")]

    def __str__(self) -> str:
        return f"{self.beneficiary_id} {self.program_id} {self.month:%Y-%m} {self.state}"


class LedgerLine(models.Model):
    """When each account leg of the ledger happened (its event's time, else its posting time),
    indexed per account: the earnings page and CSV list a referrer's million entries newest
    first from this index instead of sorting them through the transaction and event joins.

    Written only by a database trigger on `ledger.Entry` inserts (migration `ledger_line`), in
    the statement that posts the entry. Entries are append-only and an event's time never
    changes, so a line never needs updating.
    """

    entry = models.OneToOneField("ledger.Entry", primary_key=True, on_delete=models.DO_NOTHING, db_constraint=False,
                                 related_name="line")
    account_id = models.BigIntegerField()
    happened_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["account_id", "-happened_at", "-entry"], name="ledgerline_account_newest")]

    def __str__(self) -> str:
        return f"entry {self.entry_id} at {self.happened_at:%Y-%m-%d %H:%M}"


class ReferralRollup(models.Model):
    """Per referrer and referral status: how many referrals, and their net spend and purchases
    (the dashboard's counts, funnel and gate progress). Kept like `EarningsRollup`: delta rows
    appended by triggers on `Referral` writes (migration `referrer_rollups`), compacted by a job."""

    referrer_id = models.BigIntegerField()
    status = models.CharField(max_length=12)
    referrals = models.BigIntegerField()
    spend = models.BigIntegerField()
    purchases = models.BigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["referrer_id", "status"])]

    def __str__(self) -> str:
        return f"{self.referrer_id} {self.status}: {self.referrals}"


class ClickRollup(models.Model):
    """Per referrer: clicks and unique clicks, appended by triggers on `Click` writes
    (migration `referrer_rollups`), compacted by a job."""

    referrer_id = models.BigIntegerField(db_index=True)
    clicks = models.BigIntegerField()
    unique_clicks = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.referrer_id}: {self.clicks} clicks"
