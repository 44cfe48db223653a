from django.apps import AppConfig


class ReferralsConfig(AppConfig):
    name = "referrals"
    verbose_name = "Referrals"

    def ready(self) -> None:
        from django.db.models import Field, ForeignObject

        from .engine.bulk import AnyOf

        Field.register_lookup(AnyOf)
        ForeignObject.register_lookup(AnyOf)

        # The jobs register the handlers of the internal events they log, which
        # verify_ledger needs to replay them.
        from .engine import jobs, rollups

        # Merges the dashboard rollups' delta rows (hourly by default, see setup_schedules).
        jobs.register_job("compact_rollups", rollups.compact)
