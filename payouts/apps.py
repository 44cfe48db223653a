from django.apps import AppConfig


class PayoutsConfig(AppConfig):
    name = "payouts"
    verbose_name = "Payouts"

    def ready(self):
        # Registers the handlers of the payout ledger events, so live posting and the
        # verify_ledger replay use the same code.
        from . import services  # noqa: F401
