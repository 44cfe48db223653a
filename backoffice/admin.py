"""Back-office admin: programme editing with history, balance adjustments, CSV export."""
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.utils.text import slugify

from ledger.admin import ReadOnlyAdmin
from ledger.money import AmountError, format_exact, to_units
from referrals.exports import csv_response
from referrals.models import Program
from referrals.services import ActionRefused

from .models import Adjustment, ProgramChange
from .services import adjustment_post, program_save


@admin.action(description="Export selected rows as CSV")
def export_csv(modeladmin, request, queryset):
    """The changelist's columns for the selected rows (or the admin's `csv_columns`), streamed
    through the one CSV writer (`referrals.exports`: formula cells neutralised, numbers kept)."""
    columns = list(getattr(modeladmin, "csv_columns", None)
                   or [c for c in modeladmin.get_list_display(request) if c != "action_checkbox"])

    def cell(obj, column):
        # `csv_<column>` gives a column's plain value for the CSV (an amount as a number, not "$1,234.56").
        if hasattr(modeladmin, f"csv_{column}"):
            value = getattr(modeladmin, f"csv_{column}")(obj)
        elif hasattr(modeladmin, column):
            value = getattr(modeladmin, column)(obj)
        else:
            value = getattr(obj, column)
            value = value() if callable(value) else value
        return "" if value is None else value if isinstance(value, (int, Decimal)) else str(value)

    def rows():
        yield columns
        for obj in queryset.iterator(chunk_size=2000):
            yield [cell(obj, c) for c in columns]

    return csv_response(rows(), filename=f"{slugify(modeladmin.model._meta.verbose_name_plural)}.csv")


admin.site.add_action(export_csv)


class ProgramChangeInline(admin.TabularInline):
    model = ProgramChange
    fields = ("created_at", "actor", "changes")
    readonly_fields = fields
    can_delete = False
    extra = 0

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Program)
class ProgramAdmin(admin.ModelAdmin):
    list_display = ("name", "key", "preset", "kind", "enabled", "rate", "partner_rate", "updated_at")
    list_filter = ("preset", "kind", "enabled")
    search_fields = ("name", "key")
    inlines = [ProgramChangeInline]
    fieldsets = (
        (None, {"fields": ("key", "preset", "name", "kind", "enabled", "description")}),
        ("What earns", {"fields": ("event_types", "product", "rate", "pays_in", "partner_rate", "partner_pays_in",
                                   "hold_days")}),
        ("Gates", {"fields": ("requires_approval", "gate_min_referrals", "gate_min_spend",
                              "template_min_runtime_hours")}),
        ("Milestone", {"fields": ("milestone_threshold", "referrer_bonus", "referred_bonus")}),
        ("Sign-up credit", {"fields": ("signup_credit", "credit_valid_days")}),
        ("Cash-out", {"fields": ("cashout_percent", "own_credits_block_cashout", "min_payout", "payout_methods")}),
    )

    def save_model(self, request, obj, form, change):
        before = {f: form.initial.get(f) for f in form.changed_data}
        program_save(program=obj, actor=request.user, changed_fields=form.changed_data, before=before)


class AdjustmentForm(forms.ModelForm):
    amount_text = forms.CharField(label="Amount", help_text="e.g. 12.50 to credit, -12.50 to debit")

    class Meta:
        model = Adjustment
        fields = ("account", "book", "amount_text", "reason")

    def clean_amount_text(self):
        text = self.cleaned_data["amount_text"].strip()
        try:
            units = to_units(text)
        except (AmountError, ArithmeticError, ValueError):
            raise forms.ValidationError("enter a decimal amount with at most 10 decimal places") from None
        if not units:
            raise forms.ValidationError("must not be zero")
        return units


@admin.register(Adjustment)
class AdjustmentAdmin(ReadOnlyAdmin):
    form = AdjustmentForm
    list_display = ("created_at", "account", "book", "signed_amount", "reason", "actor")
    list_filter = ("book",)
    search_fields = ("=account__external_id",)
    search_help_text = "Exact account id."
    list_select_related = ("account", "actor")
    raw_id_fields = ("account",)

    @admin.display(description="Amount")
    def signed_amount(self, obj):
        return format_exact(obj.amount)

    def has_add_permission(self, request):
        return request.user.has_perm("backoffice.add_adjustment")

    def save_model(self, request, obj, form, change):
        try:
            created = adjustment_post(account=form.cleaned_data["account"], book=form.cleaned_data["book"],
                                      amount=form.cleaned_data["amount_text"], reason=form.cleaned_data["reason"],
                                      actor=request.user)
        except ActionRefused as exc:
            # The form was valid but the service refused (e.g. a debit above the balance): say why.
            self.message_user(request, str(exc), messages.ERROR)
            obj.pk = None
            return
        obj.pk = created.pk

    def response_add(self, request, obj, post_url_continue=None):
        if obj.pk is None:
            from django.http import HttpResponseRedirect

            return HttpResponseRedirect(request.path)
        return super().response_add(request, obj, post_url_continue)
