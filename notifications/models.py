"""Which e-mails a user wants, and which one-off e-mails have been sent (so none goes twice)."""
from django.conf import settings
from django.db import models


class Kind(models.TextChoices):
    REFERRAL_SIGNED_UP = "referral_signed_up", "Someone signed up through my referral link"
    APPLICATION_DECIDED = "application_decided", "A programme application of mine is approved or rejected"
    PAYOUT_STATUS = "payout_status", "A payout of mine is paid or has failed"
    CREDITS_EXPIRING = "credits_expiring", "Some of my credits expire in 3 days"


class NotificationPreference(models.Model):
    """One row per user who changed a setting; no row means every kind is on."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="notification_preference")
    referral_signed_up = models.BooleanField(default=True)
    application_decided = models.BooleanField(default=True)
    payout_status = models.BooleanField(default=True)
    credits_expiring = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"e-mail settings of {self.user}"

    def wants(self, kind: str) -> bool:
        return bool(getattr(self, kind))


class SentNotification(models.Model):
    """A one-off e-mail already queued, by a key naming what it is about (e.g. the credit grant
    of an expiry reminder): the unique key makes a second run of the job a no-op."""

    key = models.CharField(max_length=120, unique=True)
    kind = models.CharField(max_length=30, choices=Kind.choices)
    account = models.ForeignKey("referrals.Account", on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.key
