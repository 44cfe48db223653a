"""Staff admin for outbound webhooks: endpoints are registered here; deliveries are read-only,
with each attempt's response, and can be sent again."""
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from ledger.admin import BigTableAdmin, ValuesFilter

from . import services
from .models import WEBHOOK_KINDS, WebhookDelivery, WebhookEndpoint


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https", help_text="Where the signed POSTs go.")
    kinds = forms.MultipleChoiceField(choices=[(k, k) for k in WEBHOOK_KINDS], required=False,
                                      widget=forms.CheckboxSelectMultiple, help_text="None ticked: every kind.")

    class Meta:
        model = WebhookEndpoint
        fields = ("url", "description", "kinds", "account", "is_active")

    def clean_url(self):
        url = self.cleaned_data["url"]
        if not url.startswith(("https://", "http://")):
            raise ValidationError("must be an http(s) URL")
        return url


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ("url", "description", "is_active", "consecutive_failures", "disabled_at", "created_at")
    list_filter = ("is_active",)
    search_fields = ("url", "description")
    raw_id_fields = ("account",)
    # The signing secret is shown once, in the message after the endpoint is created; afterwards
    # only its last characters (enough to tell two apart), to everyone, superusers included.
    readonly_fields = ("signing_secret", "consecutive_failures", "disabled_at", "disabled_reason", "created_at")
    actions = ["enable"]

    def get_fields(self, request, obj=None):
        fields = ["url", "description", "kinds", "account", "is_active"]
        return fields + list(self.readonly_fields) if obj else fields

    @admin.display(description="signing secret")
    def signing_secret(self, obj) -> str:
        return f"whsec_••••{obj.secret[-4:]}" if obj.secret else "—"

    def response_add(self, request, obj, post_url_continue=None):
        self.message_user(request, f"Signing secret of this endpoint — give it to the receiver now, it will not be "
                                   f"shown again: {obj.secret}", messages.WARNING)
        return super().response_add(request, obj, post_url_continue)

    @admin.action(description="Enable again (reset the failure count)", permissions=["change"])
    def enable(self, request, queryset):
        for endpoint in queryset:
            services.webhook_endpoint_enable(endpoint=endpoint, actor=request.user)
        self.message_user(request, f"Enabled {queryset.count()} endpoint(s).", messages.SUCCESS)


class KindFilter(ValuesFilter):
    title = "kind"
    parameter_name = "kind"
    values = tuple(WEBHOOK_KINDS)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(BigTableAdmin):
    list_display = ("id", "kind", "endpoint", "status", "attempts", "response_code", "created_at", "last_attempt_at")
    list_filter = ("status", KindFilter, "endpoint", "created_at")
    list_select_related = ("endpoint",)
    search_fields = ("=message_id",)
    search_help_text = "Exact message id."
    raw_id_fields = ("endpoint", "redelivery_of")
    readonly_fields = ("endpoint", "message_id", "kind", "payload", "status", "attempts", "next_attempt_at",
                       "last_attempt_at", "response_code", "response_body", "error", "redelivery_of",
                       "created_at", "delivered_at")
    fields = readonly_fields
    actions = ["redeliver"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_redeliver_permission(self, request) -> bool:
        # Deliveries are read-only here, but sending one again is a write: it needs the
        # change permission (superusers, or a group granted integrations.change_webhookdelivery).
        return request.user.has_perm("integrations.change_webhookdelivery")

    @admin.action(description="Redeliver (send the message again)", permissions=["redeliver"])
    def redeliver(self, request, queryset):
        copies = [services.webhook_redeliver(delivery=d, actor=request.user)
                  for d in queryset.select_related("endpoint")]
        self.message_user(request, f"Queued {len(copies)} redelivery(ies).", messages.SUCCESS)
