"""The double-entry ledger: transactions, their entries (legs) and a balance projection.

Entries are append-only; a correction is a new, reversing transaction. Every transaction's
legs sum to zero (checked by `ledger.services.post` and, on PostgreSQL, by a deferred
constraint trigger installed in migration 0002).
"""
from django.conf import settings
from django.db import models


class Book(models.TextChoices):
    # An account holder's books.
    PENDING = "pending", "Pending (held)"
    CREDITS = "credits", "Platform credits"
    CASH = "cash", "Cash earnings"
    RESERVED = "reserved", "Reserved for payouts"
    # The operator's side of every movement (no account holder).
    EARNINGS_EXPENSE = "platform:earnings", "Platform: earnings paid"
    REDEEMED = "platform:redeemed", "Platform: credits redeemed"
    EXPIRED = "platform:expired", "Platform: credits expired"
    ADJUSTMENTS = "platform:adjustments", "Platform: staff adjustments"
    PAYOUTS = "platform:payouts", "Platform: paid out"


ACCOUNT_BOOKS = (Book.PENDING, Book.CREDITS, Book.CASH, Book.RESERVED)
PLATFORM_BOOKS = tuple(b for b in Book if b not in ACCOUNT_BOOKS)


class Transaction(models.Model):
    """One balanced movement of value, tied to what caused it and the rule that computed it."""

    kind = models.CharField(max_length=40)
    rule = models.CharField(max_length=80, blank=True, help_text="The programme rule that computed it.")
    event = models.ForeignKey(
        "referrals.Event", null=True, blank=True, on_delete=models.PROTECT, related_name="transactions"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    memo = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind}"


class Entry(models.Model):
    """A leg of a transaction: a signed amount (ledger units) on one book."""

    transaction = models.ForeignKey(Transaction, on_delete=models.PROTECT, related_name="entries")
    # No index of its own: (account, book) and (account, program) below serve every lookup by
    # account, and a third index on the ledger's largest table is one more write per leg.
    account = models.ForeignKey(
        "referrals.Account", null=True, blank=True, on_delete=models.PROTECT, related_name="entries", db_index=False
    )
    book = models.CharField(max_length=32, choices=Book.choices)
    program = models.ForeignKey(
        "referrals.Program", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    amount = models.BigIntegerField(help_text="Ledger units (10^-10); positive adds to the book.")

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "entries"
        indexes = [models.Index(fields=["account", "book"]), models.Index(fields=["account", "program"])]
        constraints = [
            models.CheckConstraint(condition=~models.Q(amount=0), name="entry_amount_not_zero"),
            models.CheckConstraint(
                condition=(
                    models.Q(account__isnull=True, book__startswith="platform:")
                    | (models.Q(account__isnull=False) & ~models.Q(book__startswith="platform:"))
                ),
                name="entry_book_matches_holder",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.book} {self.amount:+d}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("ledger entries are append-only; post a reversing transaction instead")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("ledger entries are append-only; post a reversing transaction instead")


class Balance(models.Model):
    """Projection of SUM(entries) per account and book, kept in the posting transaction."""

    account = models.ForeignKey("referrals.Account", on_delete=models.CASCADE, related_name="balances")
    book = models.CharField(max_length=32, choices=Book.choices)
    amount = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "book"], name="balance_unique_book")]

    def __str__(self) -> str:
        return f"{self.account_id} {self.book}"
