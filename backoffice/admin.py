"""Back-office admin: programme editing with history, balance adjustments, CSV export."""
import json
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.db.models import JSONField, OuterRef, Subquery
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import slugify

from ledger.admin import ReadOnlyAdmin
from ledger.money import AmountError, format_exact, to_units
from referrals.engine import versions
from referrals.engine.services import ActionRefused
from referrals.exports import csv_response
from referrals.models import Program, ProgramVersion

from .models import Adjustment, ProgramChange
from .services import adjustment_post, program_save


@admin.action(description="Export selected rows as CSV", permissions=["view"])  # reads only
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
    readonly_fields = ("versions_table",)
    fieldsets = (
        (None, {"fields": ("key", "preset", "name", "kind", "enabled", "description")}),
        ("What earns", {"fields": ("event_types", "product", "rate", "pays_in", "partner_rate", "partner_pays_in",
                                   "hold_days")}),
        ("Gates", {"fields": ("requires_approval", "gate_min_referrals", "gate_min_spend",
                              "template_min_runtime_hours")}),
        ("Milestone", {"fields": ("milestone_threshold", "referrer_bonus", "referred_bonus")}),
        ("Sign-up credit", {"fields": ("signup_credit", "credit_valid_days")}),
        ("Cash-out", {"fields": ("cashout_percent", "own_credits_block_cashout", "min_payout", "payout_methods")}),
        ("Versions", {"fields": ("versions_table",),
                      "description": "Each saved change is a new version; events and jobs use the version in "
                                     "force at their own time, so earlier earnings keep the rules they had."}),
    )

    def save_model(self, request, obj, form, change):
        before = {f: form.initial.get(f) for f in form.changed_data}
        with versions.authored(actor=request.user, source="admin"):
            program_save(program=obj, actor=request.user, changed_fields=form.changed_data, before=before)

    @admin.display(description="Versions")
    def versions_table(self, obj):
        if obj is None or obj.pk is None:
            return "Version 1 is made when the programme is saved."
        rows = list(obj.versions.select_related("created_by").order_by("-number"))
        configs = {v.number: v.config for v in rows}
        link = reverse("admin:referrals_programversion_changelist") + f"?program__id__exact={obj.pk}"
        body = format_html_join("", "<tr><td>v{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", (
            (v.number, v.effective_at.isoformat(), v.source, v.created_by or "",
             changes_text(v, configs.get(v.number - 1))) for v in rows))
        return format_html(
            '<table><thead><tr><th>Version</th><th>In force from</th><th>Made by</th><th>Staff</th>'
            '<th>What changed</th></tr></thead><tbody>{}</tbody></table><p><a href="{}">All versions</a></p>',
            body, link)


def changes_text(version: ProgramVersion, previous_config: dict | None) -> str:
    """Field by field against the previous version: `rate: 2.00 → 3.50; hold_days: 0 → 7`."""
    if version.number == 1 or previous_config is None:
        return "first version"
    changed = versions.diff(previous_config, version.config)
    return "; ".join(f"{name}: {_shown(before)} → {_shown(after)}" for name, (before, after) in changed.items())


def _shown(value) -> str:
    return "(empty)" if value in ("", None, []) else str(value)


@admin.register(ProgramVersion)
class ProgramVersionAdmin(admin.ModelAdmin):
    """Every version of every programme, newest first, with what it changed (read-only)."""

    list_display = ("program", "number", "effective_at", "what_changed", "source", "created_by", "created_at")
    list_filter = ("program", "source")
    list_select_related = ("program", "created_by")
    fields = ("program", "number", "effective_at", "what_changed", "source", "created_by", "created_at", "config")
    readonly_fields = fields

    def get_queryset(self, request):
        previous = ProgramVersion.objects.filter(program=OuterRef("program"), number=OuterRef("number") - 1)
        return (super().get_queryset(request).order_by("-effective_at", "-number")
                .annotate(previous_config=Subquery(previous.values("config")[:1], output_field=JSONField())))

    @admin.display(description="What changed (against the previous version)")
    def what_changed(self, obj):
        previous = getattr(obj, "previous_config", None)
        if isinstance(previous, str):  # a JSON subquery comes back as text on some databases
            previous = json.loads(previous)
        return changes_text(obj, previous)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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
