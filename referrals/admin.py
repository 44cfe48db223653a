"""Staff admin: the applications and fraud desks, and read-only lists of accounts, referrals,
events, accruals, clicks, the audit log and job runs. Decisions go through the services (audited);
big tables follow ledger.admin's rules (no full counts, joins in the list query, exact search)."""
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import ValidationError
from django.db.models import BigIntegerField, F, Func, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.template.loader import render_to_string

from backoffice.desk import DecisionDeskMixin
from backoffice.selectors import account_summary, application_review
from ledger.admin import BigTableAdmin, ReadOnlyAdmin, ValuesFilter
from ledger.money import format_exact, to_units

from .api.keys import ApiKeyInvalid, api_key_create, api_key_revoke, validate_api_key_request
from .attribution import clicks
from .engine import apply as engine
from .engine import services
from .models import (
    Account,
    Accrual,
    ApiKey,
    Application,
    AuditLog,
    Click,
    CreditGrant,
    Event,
    FraudFlag,
    JobRun,
    Referral,
    Template,
)
from .templatetags.figures import money_text


class ReasonActionForm(ActionForm):
    reason = forms.CharField(required=False, label="Reason", widget=forms.TextInput(attrs={"size": 40}))


def _run_decision(modeladmin, request, queryset, decide, verb):
    reason = request.POST.get("reason", "").strip()
    done = 0
    for obj in queryset:
        try:
            decide(obj, request.user, reason)
            done += 1
        except services.ActionRefused as exc:
            modeladmin.message_user(request, f"{obj}: {exc}", messages.ERROR)
    if done:
        opts = modeladmin.model._meta
        noun = opts.verbose_name if done == 1 else opts.verbose_name_plural
        modeladmin.message_user(request, f"{verb} {done} {noun}.", messages.SUCCESS)


class EventTypeFilter(ValuesFilter):
    title = "type"
    parameter_name = "type"

    def lookups(self, request, model_admin):
        # The types with a handler are every type that can be stored; listing them needs no query.
        return [(t, t) for t in engine.known_types()]


class AuditObjectFilter(ValuesFilter):
    title = "object type"
    parameter_name = "object_type"
    values = ("Account", "Application", "FraudFlag", "Payout", "Program", "ApiKey", "WebhookEndpoint")


class SignalFilter(admin.SimpleListFilter):
    title = "signal"
    parameter_name = "signal"
    SIGNALS = ("same_email", "same_payment", "same_ip", "same_device", "disposable_email", "shared_click",
               "click_burst", "payout_destination")

    def lookups(self, request, model_admin):
        return [(name, name.replace("_", " ")) for name in self.SIGNALS]

    def queryset(self, request, queryset):
        # The JSON text of the signals list holds `"signal": "<name>"`; same test on every database.
        return queryset.filter(signals__icontains=f'"{self.value()}"') if self.value() in self.SIGNALS else queryset


@admin.register(Account)
class AccountAdmin(BigTableAdmin):
    list_display = ("external_id", "email", "referral_code", "track", "code_enabled", "signed_up_at")
    list_filter = ("track", "code_enabled", "signed_up_at")
    search_fields = ("=external_id", "=email", "=referral_code")
    search_help_text = "Exact account id, e-mail or referral code."
    raw_id_fields = ("user",)
    readonly_fields = ("external_id", "referral_code", "track", "email_normalized", "purchased_credits",
                       "signup_ip", "device_id", "signed_up_at", "created_at")

    def has_add_permission(self, request):
        return False  # accounts come from account.created events

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # Disabling a code must stop its clicks now, not when the click path's cache expires.
        clicks.forget_codes(obj.referral_code)


@admin.register(Application)
class ApplicationAdmin(DecisionDeskMixin, ReadOnlyAdmin):
    """The applications desk: open applications with the figures that justify them."""

    list_display = ("account", "program", "status", "referrals_now", "spend_now", "held_now", "opened_at",
                    "decided_by")
    list_filter = ("status", "program", "opened_at")
    search_fields = ("=account__external_id",)
    search_help_text = "Exact account id."
    list_select_related = ("account", "program", "decided_by")
    readonly_fields = ("review", "account", "program", "status", "referrals_at_open", "spend", "opened_at",
                       "decided_at", "decided_by", "reason")
    fieldsets = (
        (None, {"fields": ("account", "program", "status", "opened_at", "decided_at", "decided_by", "reason")}),
        ("Why it was opened: the gate, then and now", {"fields": ("referrals_at_open", "spend", "review")}),
    )
    action_form = ReasonActionForm
    actions = ["approve", "reject", "reopen"]
    decisions = (("approve", "Approve (releases the held earnings)"), ("reject", "Reject"), ("reopen", "Reopen"))
    desk_title = "Applications desk"
    desk_help = ("Open an application to see the figures behind it, then approve (its held earnings are released) "
                 "or reject with a reason. Or tick several and pick an action below.")
    change_form_template = "admin/referrals/application/change_form.html"

    def get_queryset(self, request):
        referrals = (Referral.objects.filter(referrer=OuterRef("account_id"))
                     .exclude(status=Referral.Status.INELIGIBLE).order_by()
                     .annotate(n=Func(F("id"), function="COUNT", output_field=IntegerField())).values("n"))
        spend = (Referral.objects.filter(referrer=OuterRef("account_id"))
                 .exclude(status=Referral.Status.INELIGIBLE).order_by()
                 .annotate(total=Func(F("spend"), function="SUM", output_field=BigIntegerField())).values("total"))
        held = (Accrual.objects.filter(beneficiary=OuterRef("account_id"), program=OuterRef("program_id"),
                                       state=Accrual.State.HELD).order_by()
                .annotate(total=Func(F("amount") - F("reversed"), function="SUM", output_field=BigIntegerField()))
                .values("total"))
        return super().get_queryset(request).annotate(
            referral_count=Coalesce(Subquery(referrals[:1]), 0), spend_total=Coalesce(Subquery(spend[:1]), 0),
            held_total=Coalesce(Subquery(held[:1]), 0))

    def decision_applies(self, name, obj):
        return {"approve": obj.status == Application.Status.OPEN, "reject": obj.status == Application.Status.OPEN,
                "reopen": obj.status == Application.Status.REJECTED}[name]

    def has_decide_permission(self, request):
        return request.user.has_perm("referrals.change_application")

    @admin.display(description="Spend at opening")
    def spend(self, obj):
        return money_text(obj.spend_at_open)

    @admin.display(description="Referrals (need)", ordering="referral_count")
    def referrals_now(self, obj):
        return f"{obj.referral_count} / {obj.program.gate_min_referrals}"

    @admin.display(description="Their spend (need)", ordering="spend_total")
    def spend_now(self, obj):
        return f"{money_text(obj.spend_total)} / {money_text(to_units(obj.program.gate_min_spend))}"

    @admin.display(description="Held earnings", ordering="held_total")
    def held_now(self, obj):
        return money_text(obj.held_total)

    @admin.display(description="The account")
    def review(self, obj):
        return render_to_string("admin/referrals/application/review.html", {"review": application_review(obj)})

    @admin.action(description="Approve selected applications (releases held earnings)", permissions=["decide"])
    def approve(self, request, queryset):
        _run_decision(self, request, queryset,
                      lambda a, u, r: services.application_approve(application=a, actor=u, reason=r), "Approved")

    @admin.action(description="Reject selected applications (reason required)", permissions=["decide"])
    def reject(self, request, queryset):
        _run_decision(self, request, queryset,
                      lambda a, u, r: services.application_reject(application=a, actor=u, reason=r), "Rejected")

    @admin.action(description="Reopen selected rejected applications", permissions=["decide"])
    def reopen(self, request, queryset):
        _run_decision(self, request, queryset,
                      lambda a, u, r: services.application_reopen(application=a, actor=u, reason=r), "Reopened")


@admin.register(FraudFlag)
class FraudFlagAdmin(DecisionDeskMixin, ReadOnlyAdmin):
    """The fraud desk: flagged referrals and accounts with the signals that fired; clear or confirm."""

    list_display = ("id", "referrer", "referred", "signal_details", "held_now", "status", "created_at", "decided_by")
    list_filter = ("status", SignalFilter, "created_at")
    search_fields = ("=referral__referrer__external_id", "=referral__referred__external_id", "=account__external_id")
    search_help_text = "Exact account id of the referrer or the referred account."
    list_select_related = ("referral__referrer", "referral__referred", "account", "decided_by")
    readonly_fields = ("referral", "account", "signal_details", "held_now", "status", "created_at", "decided_at",
                       "decided_by", "reason", "review")
    fieldsets = ((None, {"fields": ("referral", "account", "signal_details", "held_now", "status", "created_at",
                                    "decided_at", "decided_by", "reason")}),
                 ("The referrer", {"fields": ("review",)}))
    action_form = ReasonActionForm
    actions = ["clear", "confirm"]
    decisions = (("clear", "Clear (not fraud: release the held earnings)"),
                 ("confirm", "Confirm fraud (void the held earnings)"))
    desk_title = "Fraud desk"
    desk_help = ("Referrals held by the self-referral rules, and accounts sharing a payout destination, with the "
                 "signals that fired. Clear a false alarm (held earnings are released, held payouts go ahead) or "
                 "confirm fraud with a reason (held earnings, or the account's cash, are voided).")
    change_form_template = "admin/referrals/fraudflag/change_form.html"

    def get_queryset(self, request):
        held = (Accrual.objects.filter(referral=OuterRef("referral_id"), state=Accrual.State.HELD).order_by()
                .annotate(total=Func(F("amount") - F("reversed"), function="SUM", output_field=BigIntegerField()))
                .values("total"))
        return super().get_queryset(request).annotate(held_total=Coalesce(Subquery(held[:1]), 0))

    def decision_applies(self, name, obj):
        return obj.status == FraudFlag.Status.OPEN

    def has_decide_permission(self, request):
        return request.user.has_perm("referrals.change_fraudflag")

    @admin.display(description="Referrer / account", ordering="referral__referrer__external_id")
    def referrer(self, obj):
        # An account-level flag (shared payout destination) concerns the account itself.
        return obj.referral.referrer if obj.referral_id else obj.account

    @admin.display(description="Referred account")
    def referred(self, obj):
        return obj.referral.referred if obj.referral_id else "—"

    @admin.display(description="Signals")
    def signal_details(self, obj):
        return "; ".join(f"{s.get('signal', '?')}" + (f" ({s['detail']})" if s.get("detail") else "")
                         for s in obj.signals)

    @admin.display(description="Held earnings", ordering="held_total")
    def held_now(self, obj):
        if not obj.referral_id:
            return "its payouts"
        return money_text(obj.held_total)

    @admin.display(description="Account review")
    def review(self, obj):
        account = obj.referral.referrer if obj.referral_id else obj.account
        return render_to_string("admin/backoffice/account_summary.html", {"review": account_summary(account)})

    @admin.action(description="Clear selected flags (release held earnings)", permissions=["decide"])
    def clear(self, request, queryset):
        _run_decision(self, request, queryset,
                      lambda f, u, r: services.fraud_flag_clear(flag=f, actor=u, reason=r), "Cleared")

    @admin.action(description="Confirm fraud (void held earnings; reason required)", permissions=["decide"])
    def confirm(self, request, queryset):
        _run_decision(self, request, queryset,
                      lambda f, u, r: services.fraud_flag_confirm(flag=f, actor=u, reason=r), "Confirmed")


@admin.register(Referral)
class ReferralAdmin(ReadOnlyAdmin):
    list_display = ("id", "referrer", "referred", "status", "ineligible_reason", "spend_display", "created_at")
    list_filter = ("status", "created_at")
    search_fields = ("=referrer__external_id", "=referred__external_id")
    search_help_text = "Exact account id of the referrer or the referred account."
    list_select_related = ("referrer", "referred")
    raw_id_fields = ("referrer", "referred", "click", "template")

    @admin.display(description="Spend", ordering="spend")
    def spend_display(self, obj):
        return money_text(obj.spend)


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("id", "external_id", "type", "source", "account", "amount_display", "occurred_at", "received_at")
    # A date filter rather than date_hierarchy: the hierarchy reads MIN/MAX over the whole table.
    list_filter = (EventTypeFilter, "source", "occurred_at")
    search_fields = ("=external_id", "=account__external_id")
    search_help_text = "Exact event id or account id."
    list_select_related = ("account",)
    raw_id_fields = ("account", "template", "refunds", "actor")

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, obj):
        return "" if obj.amount is None else format_exact(obj.amount)


@admin.register(Accrual)
class AccrualAdmin(ReadOnlyAdmin):
    list_display = ("id", "beneficiary", "program", "rule", "amount_display", "reversed_display", "destination",
                    "state", "created_at")
    list_filter = ("state", "program", "destination", "held_for_gate", "held_for_template", "held_for_fraud",
                   "created_at")
    search_fields = ("=beneficiary__external_id", "=rule")
    search_help_text = "Exact account id or rule."
    list_select_related = ("beneficiary", "program")
    raw_id_fields = ("beneficiary", "event", "referral", "template")

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, obj):
        return format_exact(obj.amount)

    @admin.display(description="Clawed back", ordering="reversed")
    def reversed_display(self, obj):
        return format_exact(obj.reversed)


@admin.register(Click)
class ClickAdmin(ReadOnlyAdmin):
    list_display = ("id", "referrer", "visitor_id", "is_unique", "path", "created_at")
    list_filter = ("is_unique", "created_at")
    search_fields = ("=referrer__external_id",)
    search_help_text = "Exact referrer account id."
    list_select_related = ("referrer",)
    raw_id_fields = ("referrer", "template")


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor", "action", "object_type", "object_id", "reason", "data")
    list_filter = (AuditObjectFilter, "created_at")
    search_fields = ("=action", "=object_id", "=actor__username")
    search_help_text = "Exact action (e.g. payout.approve), object id or staff username."
    list_select_related = ("actor",)


class FailedFilter(admin.SimpleListFilter):
    title = "outcome"
    parameter_name = "failed"

    def lookups(self, request, model_admin):
        return [("yes", "Failed"), ("no", "Succeeded")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(error="")
        return queryset.filter(error="") if self.value() == "no" else queryset


class JobNameFilter(ValuesFilter):
    title = "job"
    parameter_name = "name"

    def lookups(self, request, model_admin):
        from .engine.jobs import JOBS

        return [(name, name) for name in JOBS]


@admin.register(JobRun)
class JobRunAdmin(ReadOnlyAdmin):
    list_display = ("id", "name", "at", "started_at", "finished_at", "counts", "error")
    list_filter = (FailedFilter, JobNameFilter, "started_at")
    search_fields = ("=name",)


@admin.register(CreditGrant)
class CreditGrantAdmin(ReadOnlyAdmin):
    list_display = ("id", "account", "amount_display", "remaining_display", "expires_at", "expired_at")
    list_filter = ("expires_at", "expired_at")
    search_fields = ("=account__external_id",)
    list_select_related = ("account",)
    raw_id_fields = ("account", "accrual")

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, obj):
        return format_exact(obj.amount)

    @admin.display(description="Remaining", ordering="remaining")
    def remaining_display(self, obj):
        return format_exact(obj.remaining)


@admin.register(Template)
class TemplateAdmin(ReadOnlyAdmin):
    list_display = ("external_id", "name", "creator", "runtime_seconds", "qualified_at")
    list_filter = ("qualified_at",)
    search_fields = ("=external_id", "=creator__external_id")
    list_select_related = ("creator",)


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiKey
        fields = ("name", "scopes", "account", "expires_at")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created here and shown once; only a hash is kept."""

    form = ApiKeyForm
    list_display = ("name", "prefix", "scopes", "account", "created_at", "last_used_at", "expires_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix")
    list_select_related = ("account",)
    raw_id_fields = ("account",)
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("name", "prefix", "scopes", "account", "created_at", "last_used_at", "expires_at", "revoked_at")

    def save_model(self, request, obj, form, change):
        if change:
            return
        try:
            key, plaintext = api_key_create(name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"],
                                            account=form.cleaned_data.get("account"),
                                            expires_at=form.cleaned_data.get("expires_at"))
        except ApiKeyInvalid as exc:
            raise ValidationError(str(exc)) from exc
        obj.pk, obj.prefix, obj.hashed_key, obj.created_at = key.pk, key.prefix, key.hashed_key, key.created_at
        self.message_user(request, f"New API key — copy it now, it will not be shown again: {plaintext}",
                          messages.WARNING)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)

        def clean(form_self):
            data = forms.ModelForm.clean(form_self)
            if not change and data.get("scopes") is not None:
                try:
                    validate_api_key_request(name=data.get("name", ""), scopes=data["scopes"],
                                             account=data.get("account"), expires_at=data.get("expires_at"))
                except ApiKeyInvalid as exc:
                    for field, message in exc.fields.items():
                        form_self.add_error(field if field in form_self.fields else None, message)
            return data

        form.clean = clean
        return form

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke(self, request, queryset):
        for key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(key=key, actor=request.user, reason="revoked in the admin")
        self.message_user(request, "Revoked.", messages.SUCCESS)
