"""Staff admin of the Stripe billing connector: the connection (secrets write-only, shown masked)
with its price mapping, the objects received and why any of them is not applied yet, the
customers (staff may map one to an account) and the import cursors."""
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from ledger.admin import ValuesFilter

from . import services
from .models import ImportCursor, Inbound, PriceMapping, StripeConnection, StripeCustomer, mask


class StripeConnectionForm(forms.ModelForm):
    # Write-only: a saved secret is never rendered back, only its mask beside the empty field.
    signing_secret = forms.CharField(
        required=False, max_length=200, strip=True, widget=forms.PasswordInput(render_value=False),
        help_text="The endpoint's signing secret from Stripe (whsec_…). Leave blank to keep the saved one.")
    api_key = forms.CharField(
        label="API key", required=False, max_length=200, strip=True, widget=forms.PasswordInput(render_value=False),
        help_text="A restricted key (rk_…) with Read on Customers, Invoices, Charges and PaymentIntents, "
                  "for import_stripe (and webhooks of API versions from 2025-03-31.basil on). Leave blank "
                  "to keep the saved one.")

    class Meta:
        model = StripeConnection
        fields = ("signing_secret", "api_key", "account_metadata_key", "referral_code_metadata_key",
                  "click_id_metadata_key", "is_active")

    def clean_signing_secret(self):
        value = self.cleaned_data["signing_secret"]
        if not value:
            if not self.instance.signing_secret:
                raise forms.ValidationError("the signing secret is required")
            return self.instance.signing_secret
        if not value.startswith("whsec_"):
            raise forms.ValidationError("must be a Stripe webhook signing secret (whsec_…)")
        return value

    def clean_api_key(self):
        value = self.cleaned_data["api_key"]
        if not value:
            return self.instance.api_key
        if value.startswith("sk_"):
            raise forms.ValidationError("use a restricted key (rk_…), not the secret key: the connector only reads")
        if not value.startswith("rk_"):
            raise forms.ValidationError("must be a Stripe restricted key (rk_…)")
        return value


class PriceMappingInline(admin.TabularInline):
    model = PriceMapping
    extra = 1
    fields = ("stripe_id", "event_type", "product_line", "description")


@admin.register(StripeConnection)
class StripeConnectionAdmin(admin.ModelAdmin):
    form = StripeConnectionForm
    inlines = [PriceMappingInline]
    list_display = ("__str__", "is_active", "rejected_count", "last_rejected_at", "updated_at")
    readonly_fields = ("webhook_url", "events_to_enable", "signing_secret_saved", "api_key_saved",
                       "rejected_count", "last_rejected_at", "last_rejected_reason", "created_at", "updated_at")
    fieldsets = (
        ("In Stripe (Developers → Webhooks → Add endpoint)", {"fields": ("webhook_url", "events_to_enable")}),
        ("Secrets", {"fields": ("signing_secret", "signing_secret_saved", "api_key", "api_key_saved")}),
        ("Customer metadata", {"fields": ("account_metadata_key", "referral_code_metadata_key",
                                          "click_id_metadata_key", "is_active")}),
        ("Refused deliveries", {"fields": ("rejected_count", "last_rejected_at", "last_rejected_reason",
                                           "created_at", "updated_at")}),
    )

    def has_add_permission(self, request):
        return super().has_add_permission(request) and not StripeConnection.objects.exists()

    @admin.display(description="Webhook URL")
    def webhook_url(self, obj):
        return f"{settings.SITE_URL}{reverse('billing:stripe-webhook')}"

    @admin.display(description="Events to enable")
    def events_to_enable(self, obj):
        return format_html("{} <br>API version of the endpoint: <code>{}</code> is best (any newer one also works "
                           "once the restricted key is saved: the connector then asks the API which invoice a "
                           "charge paid)",
                           format_html_join(" ", "<code>{}</code>", ((t,) for t in services.WEBHOOK_EVENTS)),
                           services.API_VERSION)

    @admin.display(description="Saved signing secret")
    def signing_secret_saved(self, obj):
        return mask(obj.signing_secret) if obj else ""

    @admin.display(description="Saved API key")
    def api_key_saved(self, obj):
        return (mask(obj.api_key) or "(none)") if obj else ""

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if any(f.has_changed() for f in formsets):
            # New or changed mappings: whatever needed one is processed again.
            done = services.mapping_saved()
            if done:
                self.message_user(request, f"{done} Stripe object(s) that needed a mapping are now applied.",
                                  messages.SUCCESS)


class TypeFilter(ValuesFilter):
    title = "type"
    parameter_name = "type"
    values = tuple(services.HANDLERS)


@admin.register(Inbound)
class InboundAdmin(admin.ModelAdmin):
    list_display = ("id", "type", "object_id", "status", "note_short", "customer_id", "source", "received_at")
    list_filter = ("status", "source", TypeFilter)
    search_fields = ("=object_id", "=key", "=customer_id", "=charge_id")
    search_help_text = "Exact Stripe id: object, event, customer or charge."
    readonly_fields = ("key", "source", "type", "object_id", "customer_id", "charge_id", "stripe_created", "status",
                       "note", "unmapped", "attempts", "received_at", "processed_at", "body")
    fields = readonly_fields
    show_full_result_count = False
    actions = ["process_again"]

    @admin.display(description="note")
    def note_short(self, obj):
        return obj.note[:120]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_process_permission(self, request):
        # Processing writes events: a write permission, not the list's view permission.
        return request.user.has_perm("billing.change_inbound")

    @admin.action(description="Process again (after a mapping or a fix)", permissions=["process"])
    def process_again(self, request, queryset):
        done = services.retry(ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{done} object(s) applied.", messages.SUCCESS)


class MappedFilter(admin.SimpleListFilter):
    title = "mapped"
    parameter_name = "mapped"

    def lookups(self, request, model_admin):
        return (("yes", "Linked to an account"), ("no", "Needs a mapping"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(linked_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(linked_at__isnull=True)
        return queryset


class StripeCustomerForm(forms.ModelForm):
    account = forms.CharField(max_length=120, required=True, strip=True,
                              help_text="Our account id for this customer; its waiting objects are then applied.")

    class Meta:
        model = StripeCustomer
        fields = ("account",)


@admin.register(StripeCustomer)
class StripeCustomerAdmin(admin.ModelAdmin):
    form = StripeCustomerForm
    list_display = ("customer_id", "account", "email", "linked_at")
    list_filter = (MappedFilter,)
    search_fields = ("=customer_id", "=account")
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        fixed = ("customer_id", "email", "linked_at", "stripe_created")
        return fixed + ("account",) if obj is not None and obj.linked_at else fixed

    def has_add_permission(self, request):
        return False

    def save_model(self, request, obj, form, change):
        if obj.linked_at:
            return  # linked by Stripe's own metadata or earlier by staff: never moved to another account
        done = services.customer_map(customer=obj, account=form.cleaned_data["account"], actor=request.user)
        self.message_user(request, f"{done} Stripe object(s) of this customer applied.", messages.SUCCESS)


@admin.register(ImportCursor)
class ImportCursorAdmin(admin.ModelAdmin):
    list_display = ("object_type", "since", "starting_after", "count", "done", "updated_at")
    readonly_fields = list_display

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
