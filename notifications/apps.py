from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "E-mail notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Explicit subscription (no Django signals): the outbox calls us after commit.
        from referrals.engine import outbox

        from .consumers import on_outbox_message, on_outbox_messages

        outbox.subscribe(on_outbox_message, many=on_outbox_messages)
