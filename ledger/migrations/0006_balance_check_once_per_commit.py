"""PostgreSQL: the balance check of the ledger transactions a database transaction wrote runs
once at its COMMIT, as one set-based query, instead of once per ledger transaction.

0003 noted each written ledger transaction in `ledger_pending_check` and hung the deferred
constraint trigger on that table, so a commit that had written 1,000 ledger transactions (one
engine batch) ran the check function 1,000 times (a sum and a delete each): about 10 ms of a
50 ms COMMIT in bench/ingest.py.

Now the collecting trigger also notes the database transaction itself, once, in
`ledger_pending_commit` (UNLOGGED, keyed by `txid_current()`, ON CONFLICT DO NOTHING), and
the deferred constraint trigger sits on that table: at COMMIT (or `SET CONSTRAINTS ALL
IMMEDIATE`) it sums every noted ledger transaction by its index, refuses the first unbalanced
one, and forgets the notes. A savepoint rolled back takes its notes (and, if it wrote the
first, the commit's note and its queued check) with it; a later write notes the commit again.
Other transactions' notes are invisible to it (MVCC) and removed by their own commits.
"""
from importlib import import_module

from django.db import migrations

_0003 = import_module("ledger.migrations.0003_balance_check_once_per_transaction")

FORWARD = """
CREATE UNLOGGED TABLE IF NOT EXISTS ledger_pending_commit (txid bigint PRIMARY KEY);

CREATE OR REPLACE FUNCTION ledger_collect_transactions() RETURNS trigger AS $$
BEGIN
    INSERT INTO ledger_pending_check (transaction_id)
        SELECT DISTINCT transaction_id FROM new_entries
        ON CONFLICT DO NOTHING;
    INSERT INTO ledger_pending_commit (txid) VALUES (txid_current()) ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION ledger_check_commit() RETURNS trigger AS $$
DECLARE
    unbalanced bigint;
    total numeric;
BEGIN
    SELECT p.transaction_id, s.total INTO unbalanced, total
    FROM ledger_pending_check p
    CROSS JOIN LATERAL (SELECT COALESCE(SUM(e.amount), 0) AS total FROM ledger_entry e
                        WHERE e.transaction_id = p.transaction_id) s
    WHERE s.total <> 0
    ORDER BY p.transaction_id
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % is unbalanced by % units', unbalanced, total
            USING ERRCODE = 'check_violation';
    END IF;
    DELETE FROM ledger_pending_check;
    DELETE FROM ledger_pending_commit WHERE txid = NEW.txid;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS ledger_pending_balanced ON ledger_pending_check;
DROP FUNCTION IF EXISTS ledger_check_pending();

CREATE CONSTRAINT TRIGGER ledger_commit_balanced
    AFTER INSERT ON ledger_pending_commit
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_commit();
"""

# Back to 0003's check per ledger transaction: its functions and constraint trigger (its
# collecting trigger stays; only the function it calls goes back).
_COLLECT = "CREATE TRIGGER ledger_entry_collect"
_0003_FUNCTIONS = _0003.FORWARD.split("ledger_pending_check (transaction_id bigint PRIMARY KEY);")[1]
BACKWARD = """
DROP TRIGGER IF EXISTS ledger_commit_balanced ON ledger_pending_commit;
DROP FUNCTION IF EXISTS ledger_check_commit();
DROP TABLE IF EXISTS ledger_pending_commit;
""" + _0003_FUNCTIONS.split(_COLLECT)[0] + _0003_FUNCTIONS.split(_COLLECT)[1].split(";", 1)[1]


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD, params=None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("ledger", "0005_entry_account_index_dropped")]
    operations = [migrations.RunPython(forward, backward)]
