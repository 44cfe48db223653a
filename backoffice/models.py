"""Staff tooling: balance adjustments and the history of programme changes."""
from django.conf import settings
from django.db import models

from ledger.models import Book


class Adjustment(models.Model):
    """A staff credit or debit of an account's book, with the reason it was made."""

    BOOKS = [(Book.CREDITS.value, "Platform credits"), (Book.CASH.value, "Cash earnings")]

    account = models.ForeignKey("referrals.Account", on_delete=models.PROTECT, related_name="adjustments")
    book = models.CharField(max_length=20, choices=BOOKS)
    amount = models.BigIntegerField(help_text="Ledger units; negative for a debit.")
    reason = models.TextField()
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    event = models.OneToOneField("referrals.Event", on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.CheckConstraint(condition=~models.Q(amount=0), name="adjustment_not_zero")]

    def __str__(self) -> str:
        return f"adjustment #{self.pk} of {self.account_id}"


class ProgramChange(models.Model):
    """One saved edit of a programme: who changed which fields from what to what, and why."""

    program = models.ForeignKey("referrals.Program", on_delete=models.CASCADE, related_name="changes")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+")
    changes = models.JSONField(default=dict, help_text="field -> [before, after]")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.program} changed {', '.join(self.changes)}"
