from django.contrib import admin

from .models import NotificationPreference, SentNotification


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(admin.ModelAdmin):
    list_display = ("user", "referral_signed_up", "application_decided", "payout_status", "credits_expiring",
                    "updated_at")
    raw_id_fields = ("user",)
    search_fields = ("user__username",)


@admin.register(SentNotification)
class SentNotificationAdmin(admin.ModelAdmin):
    list_display = ("key", "kind", "account", "created_at")
    raw_id_fields = ("account",)
    show_full_result_count = False
