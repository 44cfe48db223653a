"""The payouts desk: requested payouts with the account's history and fraud flags beside them, and
the staff actions (approve — twice above the maker-checker limit —, reject with a reason, retry
failed, mark paid externally), each calling one service that checks the rules again."""
from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.admin.utils import unquote
from django.db.models import F, Func, IntegerField, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.template.loader import render_to_string
from django.utils import timezone

from backoffice.desk import DecisionDeskMixin
from backoffice.selectors import flags_concerning, payout_review
from ledger.admin import ReadOnlyAdmin
from ledger.money import format_cents
from referrals.engine.services import ActionRefused
from referrals.models import FraudFlag, Program
from referrals.templatetags.figures import money_text

from . import services
from .models import Payout, PayoutMethod, PayoutTransition, StripeWebhook


class ReasonActionForm(ActionForm):
    reason = forms.CharField(required=False, label="Reason", widget=forms.TextInput(attrs={"size": 40}))
    reference = forms.CharField(required=False, label="Reference (mark paid)", max_length=120,
                                widget=forms.TextInput(attrs={"size": 24}))


class TransitionInline(admin.TabularInline):
    model = PayoutTransition
    fields = ("created_at", "from_status", "to_status", "source", "actor", "reason", "data")
    readonly_fields = fields
    can_delete = False
    extra = 0
    verbose_name_plural = "Audit trail (every status change and approval)"

    def has_add_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")


class ApprovalFilter(admin.SimpleListFilter):
    title = "approval"
    parameter_name = "approval"

    def lookups(self, request, model_admin):
        return [("first", "Waiting for a first approval"), ("second", "Waiting for a second approval"),
                ("two", "Needs two approvals (above the limit)")]

    def queryset(self, request, queryset):
        requested = queryset.filter(status=Payout.Status.REQUESTED)
        if self.value() == "first":
            return requested.filter(first_approved_at__isnull=True)
        if self.value() == "second":
            return requested.filter(first_approved_at__isnull=False)
        if self.value() == "two":
            limit = services.second_approval_above()
            return queryset.filter(amount__gt=limit) if limit else queryset.none()
        return queryset


@admin.register(Payout)
class PayoutAdmin(DecisionDeskMixin, ReadOnlyAdmin):
    list_display = ("id", "account", "amount_display", "method_type", "state", "account_age", "open_flags",
                    "paid_before", "requested_at")
    list_display_links = ("id", "account")
    list_filter = ("status", ApprovalFilter, "method_type", "requested_at")
    search_fields = ("=id", "=account__external_id", "=provider_reference")
    search_help_text = "Exact payout id, account id or provider reference."
    list_select_related = ("account", "first_approved_by", "first_approved_by_key")
    raw_id_fields = ("account", "method", "requested_by")
    readonly_fields = ("review", "account", "method", "method_type", "amount_display", "state", "taken_from",
                       "attempt", "provider_reference", "failure_reason", "last_error", "requested_by",
                       "requested_at", "first_approved_by", "first_approved_by_key", "first_approved_at",
                       "approved_by", "approved_at", "processing_at", "finished_at")
    fieldsets = (
        (None, {"fields": ("account", "amount_display", "method", "state", "requested_at", "requested_by")}),
        ("The account: history, balances and fraud flags", {"fields": ("review",)}),
        ("Approvals", {"fields": ("first_approved_by", "first_approved_by_key", "first_approved_at",
                                  "approved_by", "approved_at")}),
        ("Provider", {"fields": ("method_type", "taken_from", "attempt", "provider_reference", "processing_at",
                                 "finished_at", "failure_reason", "last_error")}),
    )
    inlines = [TransitionInline]
    action_form = ReasonActionForm
    actions = ["approve", "reject", "retry", "mark_paid"]
    change_form_template = "admin/payouts/payout/change_form.html"
    decisions = (("approve", "Approve"), ("reject", "Reject"), ("retry", "Retry"),
                 ("mark_paid", "Mark paid externally"))
    desk_title = "Payouts desk"
    desk_help = ("Open a payout to see the account's history, balances and fraud flags, then approve it (it is sent "
                 "to the provider) or reject it with a reason. Large payouts need two approvals by two people.")

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        payout = self.get_object(request, unquote(object_id)) if object_id else None
        needs_two = (payout is not None and payout.status == Payout.Status.REQUESTED
                     and services.needs_second_approval(payout.amount))
        open_flags = (FraudFlag.objects.filter(flags_concerning(payout.account_id), status=FraudFlag.Status.OPEN)
                      .count() if payout is not None else 0)
        extra_context = {**(extra_context or {}), "needs_two_approvals": needs_two, "open_flags": open_flags,
                         "second_approval_above": money_text(services.second_approval_above())}
        return super().changeform_view(request, object_id, form_url, extra_context)

    def decision_applies(self, name: str, obj) -> bool:
        return obj.status in {"approve": [Payout.Status.REQUESTED],
                              "reject": [Payout.Status.REQUESTED, Payout.Status.APPROVED],
                              "retry": [Payout.Status.FAILED],
                              "mark_paid": [Payout.Status.APPROVED, Payout.Status.PROCESSING]}[name]

    def get_queryset(self, request):
        flags = (FraudFlag.objects.filter(flags_concerning(OuterRef("account_id")), status=FraudFlag.Status.OPEN)
                 .order_by().annotate(n=Func(F("id"), function="COUNT", output_field=IntegerField())).values("n"))
        # Paid before: the account's other payouts that were paid, never this one itself.
        paid = (Payout.objects.filter(account_id=OuterRef("account_id"), status=Payout.Status.PAID)
                .exclude(pk=OuterRef("pk")).order_by().values("account_id").annotate(total=Sum("amount")).values("total"))
        return super().get_queryset(request).annotate(
            open_flag_count=Coalesce(Subquery(flags[:1]), 0), paid_total=Coalesce(Subquery(paid[:1]), 0))

    def has_decide_permission(self, request):
        return request.user.has_perm("payouts.change_payout")

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, obj):
        return money_text(obj.amount)

    def csv_amount_display(self, obj):
        return format_cents(obj.amount)

    def csv_paid_before(self, obj):
        return format_cents(obj.paid_total)

    @admin.display(description="Status", ordering="status")
    def state(self, obj):
        if obj.awaiting_second_approval:
            return f"Requested — approved once (by {_first_approver(obj)}), waiting for a second approver"
        if obj.status == Payout.Status.REQUESTED and services.needs_second_approval(obj.amount):
            return "Requested — needs two approvals"
        if obj.status == Payout.Status.PROCESSING and obj.last_error:
            return "Processing — the provider has not answered yet; retried automatically"
        return obj.get_status_display()

    @admin.display(description="Taken from")
    def taken_from(self, obj):
        names = dict(Program.objects.filter(pk__in=[pid for pid, _ in obj.allocation]).values_list("pk", "name"))
        return "; ".join(f"{names.get(pid, pid)}: {money_text(units)}" for pid, units in obj.allocation)

    @admin.display(description="Account age")
    def account_age(self, obj):
        days = (timezone.now() - obj.account.signed_up_at).days
        return f"{days} day{'s' if days != 1 else ''}"

    @admin.display(description="Open fraud flags", ordering="open_flag_count")
    def open_flags(self, obj):
        return obj.open_flag_count

    @admin.display(description="Paid before (other payouts)", ordering="paid_total")
    def paid_before(self, obj):
        return money_text(obj.paid_total)

    @admin.display(description="Account review")
    def review(self, obj):
        return render_to_string("admin/payouts/payout/review.html", {"review": payout_review(obj), "payout": obj})

    def _decide(self, request, queryset, decide, verb):
        reason = request.POST.get("reason", "").strip()
        done, waiting = 0, 0
        for payout in queryset:
            if verb == "Approved" and payout.open_flag_count:
                self.message_user(request, f"Warning: the account of {payout} ({payout.account.external_id}) has "
                                           f"{payout.open_flag_count} open fraud flag(s) on it or its referrals; "
                                           "review them in the fraud desk.", messages.WARNING)
            try:
                payout = decide(payout, request.user, reason)
            except (ActionRefused, services.PayoutInvalid) as exc:
                self.message_user(request, f"{payout}: {exc}", messages.ERROR)
                continue
            if payout.awaiting_second_approval:
                waiting += 1
            else:
                done += 1
        if done:
            self.message_user(request, f"{verb} {done} payout(s).", messages.SUCCESS)
        if waiting:
            self.message_user(request, f"Recorded your approval of {waiting} payout(s) above "
                                       f"{money_text(services.second_approval_above())}: a second staff member "
                                       "must approve before they are sent.", messages.WARNING)

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

    @admin.action(description="Mark selected payouts paid externally (reason required, e.g. the bank reference)",
                  permissions=["decide"])
    def mark_paid(self, request, queryset):
        # The bank or provider reference becomes the payout's provider reference, so a search for
        # it finds the payout; without a separate reference the reason (which usually holds it) does.
        reference = request.POST.get("reference", "").strip()

        def mark(payout, user, reason):
            if not reason:
                raise services.PayoutInvalid({"reason": "is required to mark a payout paid by hand"})
            return services.payout_mark_paid(payout=payout, actor=user, reason=reason, source=services.STAFF,
                                             reference=(reference or reason)[:120])

        self._decide(request, queryset, mark, "Marked paid")


def _first_approver(payout: Payout) -> str:
    if payout.first_approved_by_id:
        return payout.first_approved_by.get_username()
    return f"API key {payout.first_approved_by_key.prefix}" if payout.first_approved_by_key_id else "?"


@admin.register(PayoutMethod)
class PayoutMethodAdmin(ReadOnlyAdmin):
    list_display = ("id", "account", "type", "masked", "ready", "updated_at")
    list_filter = ("type", "ready")
    search_fields = ("=account__external_id",)
    list_select_related = ("account",)
    # The full details are never shown, in the admin either.
    fields = ("account", "type", "masked", "ready", "status_updated_at", "created_at", "updated_at")
    readonly_fields = fields


@admin.register(StripeWebhook)
class StripeWebhookAdmin(ReadOnlyAdmin):
    list_display = ("id", "event_id", "type", "status", "received_at", "processed_at")
    list_filter = ("status", "type", "received_at")
    search_fields = ("=event_id",)
    fields = ("event_id", "type", "status", "error", "received_at", "processed_at", "headers", "body")
    readonly_fields = fields

