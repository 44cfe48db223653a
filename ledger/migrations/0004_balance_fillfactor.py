"""PostgreSQL: room on each page of the balance projection, so moving a balance (`amount` is
in no index) is a HOT update that writes no index entry (issue 13.4, docs/benchmarks.md
"Periodic jobs"). Applies to pages written from now on; rows already stored keep their packed
pages until the table is rewritten (VACUUM FULL or pg_repack, at a quiet time)."""
from django.db import migrations

FILLFACTOR = 70


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE ledger_balance SET (fillfactor = {FILLFACTOR})", params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE ledger_balance RESET (fillfactor)", params=None)


class Migration(migrations.Migration):
    dependencies = [("ledger", "0003_balance_check_once_per_transaction")]
    operations = [migrations.RunPython(forward, backward)]
