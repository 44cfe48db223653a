from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "Integrations (outbound webhooks)"

    def ready(self) -> None:
        from referrals.engine import ingestion, outbox  # noqa: F401  (ingestion: registers its Celery task)

        from . import services

        outbox.subscribe(services.on_outbox_message, many=services.on_outbox_messages)
