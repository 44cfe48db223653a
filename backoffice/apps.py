from django.apps import AppConfig


class BackofficeConfig(AppConfig):
    name = "backoffice"
    verbose_name = "Back office"

    def ready(self) -> None:
        from referrals.engine.services import register_handler
        from referrals_site import checks

        checks.register()  # the deploy check of development secrets

        from . import admin_actions

        admin_actions.install()  # permission checks on third-party admin actions

        from .services import ADJUSTMENT_POSTED, apply_adjustment

        register_handler(ADJUSTMENT_POSTED, apply_adjustment)

