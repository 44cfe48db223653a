"""Cheaper row writes for the periodic jobs (issue 13.4, docs/benchmarks.md "Periodic jobs").

- Accrual: the two indexes with `state` become partial indexes on held accruals only. A
  released accrual (most are created released) and the release's new row version add no
  entry to them, and the hold release reads a far smaller index.
- PostgreSQL only: `fillfactor` leaves room on each heap page, so an UPDATE that changes no
  indexed column can keep the new row version on its page as a HOT update (no index entry
  written): the credit expiry's UPDATE of `referrals_creditgrant` (`remaining`, `expired_at`)
  and, where the page has room, the accrual's row version on release. It applies to pages
  written from now on; rows already stored keep their packed pages until the table is
  rewritten (VACUUM FULL or pg_repack, at a quiet time).
"""
from django.db import migrations, models

FILLFACTOR = {"referrals_creditgrant": 80, "referrals_accrual": 90}


def set_fillfactor(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        for table, percent in FILLFACTOR.items():
            schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = {percent})", params=None)


def reset_fillfactor(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        for table in FILLFACTOR:
            schema_editor.execute(f"ALTER TABLE {table} RESET (fillfactor)", params=None)


class Migration(migrations.Migration):

    dependencies = [("referrals", "0011_event_indexes")]

    operations = [
        migrations.RemoveIndex(model_name="accrual", name="referrals_a_benefic_4d09e6_idx"),
        migrations.RemoveIndex(model_name="accrual", name="referrals_a_state_485673_idx"),
        migrations.AddIndex(
            model_name="accrual",
            index=models.Index(condition=models.Q(("state", "held")), fields=["beneficiary", "program"],
                               name="accrual_held_by_beneficiary"),
        ),
        migrations.AddIndex(
            model_name="accrual",
            index=models.Index(condition=models.Q(("state", "held")), fields=["held_until"], name="accrual_held_until"),
        ),
        migrations.RunPython(set_fillfactor, reset_fillfactor),
    ]
