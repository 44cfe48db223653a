from django.apps import AppConfig


class PayoutsConfig(AppConfig):
    name = "payouts"
    verbose_name = "Payouts"

    def ready(self):
        # Registers the handlers of the payout ledger events, so live posting and the
        # verify_ledger replay use the same code.
        from referrals.engine.jobs import register_job

        from . import services

        register_job("retry_stuck_payouts", lambda at: services.retry_stuck_payouts(at=at), self_committing=True)
