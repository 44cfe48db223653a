"""Read-only admin over the ledger: staff can read, filter, search and export it, never edit it.

Every changelist here stays quick on a million rows: no full count (`EstimatedCountPaginator`,
`show_full_result_count = False`, no facet counts), related rows joined in the one list query
(`list_select_related`), exact-match search on indexed columns, filters whose choices are known
without reading the table, and raw id widgets instead of drop-downs of every account.
"""
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import OuterRef, Q, Subquery, Sum

from backoffice.paginator import EstimatedCountPaginator

from .models import Balance, Entry, Transaction
from .money import format_exact

MAX_SEARCH_KEYS = 1000


class BigTableAdmin(admin.ModelAdmin):
    """For tables that grow without bound (ledger, events, clicks, accruals, audit).

    Search is exact and index-friendly: each `search_fields` path ("=" prefix optional) matches the
    whole term, case-sensitively, and a path through a relation becomes `fk IN (<keys found first>)`, so
    PostgreSQL answers with the indexes (Django's "=" search is `UPPER(x) = UPPER(term)` ORed across
    joins, a scan of the whole table). A term that is not a valid value for a field (text for an id)
    skips that field."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        conditions = [exact_match(self.model, path.lstrip("="), term) for path in self.get_search_fields(request)]
        query = Q(pk__in=[])
        for condition in conditions:
            if condition is not None:
                query |= condition
        return queryset.filter(query), False


def exact_match(model, path: str, term: str) -> Q | None:
    """`path == term` as a condition on `model` that an index can answer; None when `term` is not
    a valid value for the field at the end of the path."""
    name, _, rest = path.partition("__")
    field = model._meta.get_field(name)
    if rest:
        inner = exact_match(field.related_model, rest, term)
        # The related keys are looked up first (a few rows by a unique or indexed column): a literal
        # IN list lets PostgreSQL OR several indexes; an IN (subquery) in an OR reads the whole table.
        keys = [] if inner is None else list(
            field.related_model.objects.filter(inner).values_list("pk", flat=True)[:MAX_SEARCH_KEYS])
        return Q(**{f"{field.attname}__in": keys}) if keys else None
    try:
        value = field.to_python(term)
    except ValidationError:
        return None
    return Q(**{field.attname: value})


class ReadOnlyAdmin(BigTableAdmin):

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class EntryInline(admin.TabularInline):
    model = Entry
    fields = ("account", "book", "program", "amount")
    readonly_fields = fields
    can_delete = False
    extra = 0

    def has_add_permission(self, request, obj=None):
        return False


class ValuesFilter(admin.SimpleListFilter):
    """A filter over a plain text column whose values are known in code: Django's default
    (`SELECT DISTINCT`) would read the whole table to list them."""

    values: tuple[str, ...] = ()

    def lookups(self, request, model_admin):
        return [(value, value) for value in self.values]

    def queryset(self, request, queryset):
        return queryset.filter(**{self.parameter_name: self.value()}) if self.value() else queryset


class TransactionKindFilter(ValuesFilter):
    title = "kind"
    parameter_name = "kind"
    values = ("accrual", "adjustment", "fraud-hold", "redemption", "reversal", "void", "payout.reserved",
              "payout.settled", "payout.released", "payout.reversed", "payout.partly_reversed", "earnings.released",
              "credits.expired")


@admin.register(Transaction)
class TransactionAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "account", "amount", "rule", "event", "actor", "created_at")
    list_filter = (TransactionKindFilter, "created_at")
    search_fields = ("=id", "=rule", "=event__external_id")
    search_help_text = "Exact transaction id, rule (e.g. runpod-revenue-share:approved) or event id."
    list_select_related = ("event", "actor")
    raw_id_fields = ("event", "actor")
    inlines = [EntryInline]

    def get_queryset(self, request):
        # Correlated subqueries on the entries' transaction index: a few legs per row of the page,
        # never a GROUP BY over the whole ledger. The amount is what moved (the positive legs).
        legs = Entry.objects.filter(transaction=OuterRef("pk")).order_by()
        moved = legs.filter(amount__gt=0).values("transaction").annotate(total=Sum("amount")).values("total")
        holder = legs.filter(account__isnull=False).order_by("id").values("account__external_id")[:1]
        return super().get_queryset(request).annotate(moved=Subquery(moved[:1]), holder=Subquery(holder))

    @admin.display(description="Account")
    def account(self, obj):
        return obj.holder or ""

    @admin.display(description="Amount")
    def amount(self, obj):
        return format_exact(obj.moved or 0)


@admin.register(Entry)
class EntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "transaction", "account", "book", "program", "amount_exact", "created_at")
    list_filter = ("book", "program", "transaction__created_at")
    search_fields = ("=account__external_id", "=transaction")
    search_help_text = "Exact account id or transaction id."
    list_select_related = ("transaction", "account", "program")
    raw_id_fields = ("transaction", "account")

    @admin.display(description="Amount", ordering="amount")
    def amount_exact(self, obj):
        return format_exact(obj.amount)

    @admin.display(description="Posted at")
    def created_at(self, obj):
        return obj.transaction.created_at


@admin.register(Balance)
class BalanceAdmin(ReadOnlyAdmin):
    list_display = ("account", "book", "amount_exact")
    list_filter = ("book",)
    search_fields = ("=account__external_id",)
    search_help_text = "Exact account id."

    @admin.display(description="Amount", ordering="amount")
    def amount_exact(self, obj):
        return format_exact(obj.amount)
    list_select_related = ("account",)
