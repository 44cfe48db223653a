"""Read-only admin over the ledger: staff can read and filter it, never edit it."""
from django.contrib import admin

from .models import Balance, Entry, Transaction


class ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False

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


@admin.register(Transaction)
class TransactionAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "rule", "event", "actor", "created_at")
    list_filter = ("kind", "created_at")
    search_fields = ("rule", "memo", "event__external_id")
    list_select_related = ("event", "actor")
    raw_id_fields = ("event", "actor")
    inlines = [EntryInline]


@admin.register(Entry)
class EntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "transaction", "account", "book", "program", "amount")
    list_filter = ("book", "program")
    search_fields = ("account__external_id",)
    list_select_related = ("transaction", "account", "program")
    raw_id_fields = ("transaction", "account")


@admin.register(Balance)
class BalanceAdmin(ReadOnlyAdmin):
    list_display = ("account", "book", "amount")
    list_filter = ("book",)
    search_fields = ("account__external_id",)
    list_select_related = ("account",)
