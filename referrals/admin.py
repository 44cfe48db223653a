"""Staff admin: programmes are edited here; decisions go through the services (audited)."""
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import ValidationError

from ledger.admin import ReadOnlyAdmin
from ledger.money import format_cents

from . import clicks, services
from .api.keys import ApiKeyInvalid, api_key_create, api_key_revoke, validate_api_key_request
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
        modeladmin.message_user(request, f"{verb} {done} item(s).", messages.SUCCESS)


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ("external_id", "email", "referral_code", "track", "code_enabled", "signed_up_at")
    list_filter = ("track", "code_enabled")
    search_fields = ("external_id", "email", "referral_code")
    raw_id_fields = ("user",)
    readonly_fields = ("external_id", "referral_code", "track", "email_normalized", "purchased_credits",
                       "signup_ip", "device_id", "signed_up_at", "created_at")
    show_full_result_count = False

    def has_add_permission(self, request):
        return False  # accounts come from account.created events

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # Disabling a code must stop its clicks now, not when the click path's cache expires.
        clicks.forget_codes(obj.referral_code)


@admin.register(Application)
class ApplicationAdmin(ReadOnlyAdmin):
    list_display = ("id", "account", "program", "status", "referrals_at_open", "spend", "opened_at", "decided_by")
    list_filter = ("status", "program")
    search_fields = ("account__external_id",)
    list_select_related = ("account", "program", "decided_by")
    action_form = ReasonActionForm
    actions = ["approve", "reject", "reopen"]

    def has_decide_permission(self, request):
        return request.user.has_perm("referrals.change_application")

    @admin.display(description="Spend at opening")
    def spend(self, obj):
        return format_cents(obj.spend_at_open)

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
class FraudFlagAdmin(ReadOnlyAdmin):
    list_display = ("id", "referral", "signal_names", "status", "created_at", "decided_by")
    list_filter = ("status",)
    list_select_related = ("referral__referrer", "referral__referred", "decided_by")
    action_form = ReasonActionForm
    actions = ["clear", "confirm"]

    def has_decide_permission(self, request):
        return request.user.has_perm("referrals.change_fraudflag")

    @admin.display(description="Signals")
    def signal_names(self, obj):
        return ", ".join(s.get("signal", "?") for s in obj.signals)

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
    list_display = ("id", "referrer", "referred", "status", "ineligible_reason", "created_at")
    list_filter = ("status",)
    search_fields = ("referrer__external_id", "referred__external_id")
    list_select_related = ("referrer", "referred")


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("id", "external_id", "type", "source", "account", "occurred_at", "received_at")
    list_filter = ("type", "source")
    search_fields = ("external_id", "account__external_id")
    list_select_related = ("account",)
    date_hierarchy = "occurred_at"


@admin.register(Accrual)
class AccrualAdmin(ReadOnlyAdmin):
    list_display = ("id", "beneficiary", "program", "rule", "amount", "reversed", "destination", "state")
    list_filter = ("state", "program", "destination", "held_for_gate", "held_for_template", "held_for_fraud")
    search_fields = ("beneficiary__external_id",)
    list_select_related = ("beneficiary", "program")


for model, fields in (
    (Template, ("external_id", "name", "creator", "runtime_seconds", "qualified_at")),
    (Click, ("id", "referrer", "visitor_id", "is_unique", "created_at")),
    (CreditGrant, ("id", "account", "amount", "remaining", "expires_at", "expired_at")),
    (AuditLog, ("created_at", "actor", "action", "object_type", "object_id", "reason")),
    (JobRun, ("id", "name", "at", "started_at", "finished_at", "counts", "error")),
):
    admin.site.register(model, type(f"{model.__name__}Admin", (ReadOnlyAdmin,), {"list_display": fields}))


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

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(key=key, actor=request.user, reason="revoked in the admin")
        self.message_user(request, "Revoked.", messages.SUCCESS)
