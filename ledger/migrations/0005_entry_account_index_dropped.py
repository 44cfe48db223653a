"""Drop ledger_entry's single-column index on account_id: the (account, book) and (account,
program) indexes start with it and serve the same lookups, and every ledger leg written paid
for the third one (issue 13.4). Only the index goes: the column and its foreign key stay. A
plain DROP INDEX (not AlterField's table rebuild on SQLite, which would drop the ledger-line
triggers of referrals/0006)."""
import django.db.models.deletion
from django.db import migrations, models

INDEX = "ledger_entry_account_id_e9f5e345"


class Migration(migrations.Migration):
    dependencies = [("ledger", "0004_balance_fillfactor")]
    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="entry",
                    name="account",
                    field=models.ForeignKey(blank=True, db_index=False, null=True,
                                            on_delete=django.db.models.deletion.PROTECT, related_name="entries",
                                            to="referrals.account"),
                ),
            ],
            database_operations=[
                migrations.RunSQL(f'DROP INDEX IF EXISTS "{INDEX}"',
                                  reverse_sql=f'CREATE INDEX "{INDEX}" ON "ledger_entry" ("account_id")'),
            ],
        ),
    ]
