"""Basic payout admin: the list, the audit trail, and the staff actions (approve, reject with a
reason, retry failed, mark paid), each calling one service. The approval queue is the admin
issue's; these actions are what it builds on."""
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm

from ledger.admin import ReadOnlyAdmin
from ledger.money import format_cents
from referrals.services import ActionRefused

from . import services
from .models import Payout, PayoutMethod, PayoutTransition, StripeWebhook


class ReasonActionForm(ActionForm):
    reason = forms.CharField(required=False, label="Reason", widget=forms.TextInput(attrs={"size": 40}))


class TransitionInline(admin.TabularInline):
    model = PayoutTransition
    fields = ("created_at", "from_status", "to_status", "source", "actor", "reason", "data")
    readonly_fields = fields
    can_delete = False
    extra = 0

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Payout)
class PayoutAdmin(ReadOnlyAdmin):
    list_display = ("id", "account", "amount_display", "method_type", "status", "attempt", "requested_at",
                    "provider_reference")
    list_filter = ("status", "method_type")
    search_fields = ("account__external_id", "provider_reference")
    list_select_related = ("account",)
    raw_id_fields = ("account", "method", "requested_by")
    readonly_fields = ("account", "method", "method_type", "amount_display", "allocation", "status", "attempt",
                       "provider_reference", "failure_reason", "last_error", "requested_by", "requested_at",
                       "approved_at", "processing_at", "finished_at")
    exclude = ("amount",)
    inlines = [TransitionInline]
    action_form = ReasonActionForm
    actions = ["approve", "reject", "retry", "mark_paid"]

    def has_decide_permission(self, request):
        return request.user.has_perm("payouts.change_payout")

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, obj):
        return format_cents(obj.amount)

    def _decide(self, request, queryset, decide, verb):
        reason = request.POST.get("reason", "").strip()
        done = 0
        for payout in queryset:
            try:
                decide(payout, request.user, reason)
                done += 1
            except (ActionRefused, services.PayoutInvalid) as exc:
                self.message_user(request, f"{payout}: {exc}", messages.ERROR)
        if done:
            self.message_user(request, f"{verb} {done} payout(s).", messages.SUCCESS)

    @admin.action(description="Approve selected payouts (sends them to the provider)", permissions=["decide"])
    def approve(self, request, queryset):
        self._decide(request, queryset, lambda p, u, r: services.payout_approve(payout=p, actor=u, reason=r),
                     "Approved")

    @admin.action(description="Reject selected payouts (reason required; returns the money)", permissions=["decide"])
    def reject(self, request, queryset):
        self._decide(request, queryset, lambda p, u, r: services.payout_reject(payout=p, actor=u, reason=r),
                     "Rejected")

    @admin.action(description="Retry selected failed payouts", permissions=["decide"])
    def retry(self, request, queryset):
        self._decide(request, queryset, lambda p, u, r: services.payout_retry(payout=p, actor=u, reason=r),
                     "Retried")

    @admin.action(description="Mark selected payouts paid (confirmed with the provider; reason required)",
                  permissions=["decide"])
    def mark_paid(self, request, queryset):
        def mark(payout, user, reason):
            if not reason:
                raise services.PayoutInvalid({"reason": "is required to mark a payout paid by hand"})
            return services.payout_mark_paid(payout=payout, actor=user, reason=reason, source=services.STAFF)

        self._decide(request, queryset, mark, "Marked paid")


@admin.register(PayoutMethod)
class PayoutMethodAdmin(ReadOnlyAdmin):
    list_display = ("id", "account", "type", "masked", "ready", "updated_at")
    list_filter = ("type", "ready")
    search_fields = ("account__external_id",)
    list_select_related = ("account",)
    # The full details are never shown, in the admin either.
    fields = ("account", "type", "masked", "ready", "status_updated_at", "created_at", "updated_at")
    readonly_fields = fields


@admin.register(StripeWebhook)
class StripeWebhookAdmin(ReadOnlyAdmin):
    list_display = ("id", "event_id", "type", "status", "received_at", "processed_at")
    list_filter = ("status", "type")
    search_fields = ("event_id",)
    fields = ("event_id", "type", "status", "error", "received_at", "processed_at", "headers", "body")
    readonly_fields = fields
