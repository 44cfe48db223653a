"""When each account leg of the ledger happened, per account (`referrals.models.LedgerLine`),
kept by a trigger on ledger entry inserts; the entries already posted are filled in once."""
import django.db.models.deletion
from django.db import migrations, models

PG_FORWARD = """
CREATE FUNCTION referrals_ledger_line_insert() RETURNS trigger AS $$
BEGIN
    INSERT INTO referrals_ledgerline (entry_id, account_id, happened_at)
    SELECT n.id, n.account_id, COALESCE(e.occurred_at, t.created_at)
    FROM new_rows n JOIN ledger_transaction t ON t.id = n.transaction_id
    LEFT JOIN referrals_event e ON e.id = t.event_id
    WHERE n.account_id IS NOT NULL;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

-- Entries are append-only; only verify_ledger's replay deletes them (and always rolls back).
CREATE FUNCTION referrals_ledger_line_delete() RETURNS trigger AS $$
BEGIN
    DELETE FROM referrals_ledgerline WHERE entry_id IN (SELECT id FROM old_rows);
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER referrals_ledger_line_insert AFTER INSERT ON ledger_entry
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION referrals_ledger_line_insert();
CREATE TRIGGER referrals_ledger_line_delete AFTER DELETE ON ledger_entry
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION referrals_ledger_line_delete();
"""

PG_BACKWARD = """
DROP TRIGGER IF EXISTS referrals_ledger_line_insert ON ledger_entry;
DROP TRIGGER IF EXISTS referrals_ledger_line_delete ON ledger_entry;
DROP FUNCTION IF EXISTS referrals_ledger_line_insert();
DROP FUNCTION IF EXISTS referrals_ledger_line_delete();
"""

SQLITE_FORWARD = [
    """CREATE TRIGGER referrals_ledger_line_insert AFTER INSERT ON ledger_entry WHEN NEW.account_id IS NOT NULL
       BEGIN
           INSERT INTO referrals_ledgerline (entry_id, account_id, happened_at)
           SELECT NEW.id, NEW.account_id, COALESCE(e.occurred_at, t.created_at)
           FROM ledger_transaction t LEFT JOIN referrals_event e ON e.id = t.event_id WHERE t.id = NEW.transaction_id;
       END""",
    """CREATE TRIGGER referrals_ledger_line_delete AFTER DELETE ON ledger_entry
       BEGIN DELETE FROM referrals_ledgerline WHERE entry_id = OLD.id; END""",
]
SQLITE_BACKWARD = ["DROP TRIGGER IF EXISTS referrals_ledger_line_insert",
                   "DROP TRIGGER IF EXISTS referrals_ledger_line_delete"]

BACKFILL = """
    INSERT INTO referrals_ledgerline (entry_id, account_id, happened_at)
    SELECT n.id, n.account_id, COALESCE(e.occurred_at, t.created_at)
    FROM ledger_entry n JOIN ledger_transaction t ON t.id = n.transaction_id
    LEFT JOIN referrals_event e ON e.id = t.event_id
    WHERE n.account_id IS NOT NULL"""


def install(apps, schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement, params=None)
    if vendor in ("postgresql", "sqlite"):
        schema_editor.execute(BACKFILL, params=None)


def uninstall(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_BACKWARD, params=None)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_BACKWARD:
            schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ('ledger', '0002_postgres_ledger_guards'),
        ('referrals', '0005_earnings_rollup'),
    ]

    operations = [
        migrations.CreateModel(
            name='LedgerLine',
            fields=[
                ('entry', models.OneToOneField(db_constraint=False, on_delete=django.db.models.deletion.DO_NOTHING, primary_key=True, related_name='line', serialize=False, to='ledger.entry')),
                ('account_id', models.BigIntegerField()),
                ('happened_at', models.DateTimeField()),
            ],
            options={
                'indexes': [models.Index(fields=['account_id', '-happened_at', '-entry'], name='ledgerline_account_newest')],
            },
        ),
        migrations.RunPython(install, uninstall),
    ]
