"""The balance check runs once per ledger transaction, not once per entry (issue 13.4).

Before: a deferred constraint trigger FOR EACH ROW of `ledger_entry` summed the entry's whole
transaction at COMMIT, so a transaction of n entries was summed n times (n² rows read), and a
job posting 100,000 entries queued 100,000 trigger events.

Now:
1. `ledger_entry_collect` — a statement-level AFTER INSERT trigger with a transition table
   notes the distinct transaction ids the statement wrote in `ledger_pending_check` (one row
   per ledger transaction; ON CONFLICT DO NOTHING, so a transaction written by several
   statements is noted once).
2. `ledger_pending_balanced` — a deferred constraint trigger on that table (constraint triggers
   are row-level only, hence the table): at COMMIT it sums each noted transaction once, refuses
   it if unbalanced, and removes the note. Notes never outlive their database transaction (an
   UNLOGGED table, empty between transactions; a rolled-back savepoint drops its notes with
   its entries).

The append-only trigger of 0002 stays as it was. SQLite relies on `ledger.services.post`.
"""
from django.db import migrations

FORWARD = """
DROP TRIGGER IF EXISTS ledger_entry_balanced ON ledger_entry;
DROP FUNCTION IF EXISTS ledger_check_balanced();

CREATE UNLOGGED TABLE IF NOT EXISTS ledger_pending_check (transaction_id bigint PRIMARY KEY);

CREATE OR REPLACE FUNCTION ledger_collect_transactions() RETURNS trigger AS $$
BEGIN
    INSERT INTO ledger_pending_check (transaction_id)
        SELECT DISTINCT transaction_id FROM new_entries
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER ledger_entry_collect
    AFTER INSERT ON ledger_entry
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_collect_transactions();

CREATE OR REPLACE FUNCTION ledger_check_pending() RETURNS trigger AS $$
DECLARE
    total numeric;
BEGIN
    SELECT COALESCE(SUM(amount), 0) INTO total FROM ledger_entry WHERE transaction_id = NEW.transaction_id;
    IF total <> 0 THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced by % units', NEW.transaction_id, total
            USING ERRCODE = 'check_violation';
    END IF;
    DELETE FROM ledger_pending_check WHERE transaction_id = NEW.transaction_id;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE CONSTRAINT TRIGGER ledger_pending_balanced
    AFTER INSERT ON ledger_pending_check
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_pending();
"""

# Back to 0002's per-entry check.
BACKWARD = """
DROP TRIGGER IF EXISTS ledger_pending_balanced ON ledger_pending_check;
DROP FUNCTION IF EXISTS ledger_check_pending();
DROP TRIGGER IF EXISTS ledger_entry_collect ON ledger_entry;
DROP FUNCTION IF EXISTS ledger_collect_transactions();
DROP TABLE IF EXISTS ledger_pending_check;

CREATE OR REPLACE FUNCTION ledger_check_balanced() RETURNS trigger AS $$
DECLARE
    total numeric;
BEGIN
    SELECT COALESCE(SUM(amount), 0) INTO total FROM ledger_entry WHERE transaction_id = NEW.transaction_id;
    IF total <> 0 THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced by % units', NEW.transaction_id, total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE CONSTRAINT TRIGGER ledger_entry_balanced
    AFTER INSERT ON ledger_entry
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("ledger", "0002_postgres_ledger_guards")]
    operations = [migrations.RunPython(forward, backward)]
