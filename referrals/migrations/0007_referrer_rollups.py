"""Referral and click rollups (`referrals.models.ReferralRollup`, `ClickRollup`) with the
triggers that append their deltas in the statement that writes a referral or a click, the
newest-first index of a referrer's referrals, and (PostgreSQL) trigram indexes for the
referral search on the referred account's id and e-mail."""
import logging

from django.db import migrations, models, transaction

log = logging.getLogger(__name__)

PG_FORWARD = """
CREATE FUNCTION referrals_referral_rollup_insert() RETURNS trigger AS $$
BEGIN
    INSERT INTO referrals_referralrollup (referrer_id, status, referrals, spend, purchases)
    SELECT referrer_id, status, COUNT(*), SUM(spend), SUM(purchases) FROM new_rows GROUP BY 1, 2;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE FUNCTION referrals_referral_rollup_update() RETURNS trigger AS $$
BEGIN
    INSERT INTO referrals_referralrollup (referrer_id, status, referrals, spend, purchases)
    SELECT referrer_id, status, SUM(n), SUM(spend), SUM(purchases) FROM (
        SELECT referrer_id, status, 1 AS n, spend, purchases FROM new_rows
        UNION ALL SELECT referrer_id, status, -1, -spend, -purchases FROM old_rows) d
    GROUP BY 1, 2 HAVING SUM(n) <> 0 OR SUM(spend) <> 0 OR SUM(purchases) <> 0;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE FUNCTION referrals_referral_rollup_delete() RETURNS trigger AS $$
BEGIN
    INSERT INTO referrals_referralrollup (referrer_id, status, referrals, spend, purchases)
    SELECT referrer_id, status, -COUNT(*), -SUM(spend), -SUM(purchases) FROM old_rows GROUP BY 1, 2;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE FUNCTION referrals_click_rollup_insert() RETURNS trigger AS $$
BEGIN
    INSERT INTO referrals_clickrollup (referrer_id, clicks, unique_clicks)
    SELECT referrer_id, COUNT(*), COUNT(*) FILTER (WHERE is_unique) FROM new_rows GROUP BY 1;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE FUNCTION referrals_click_rollup_update() RETURNS trigger AS $$
BEGIN
    INSERT INTO referrals_clickrollup (referrer_id, clicks, unique_clicks)
    SELECT referrer_id, SUM(n), SUM(u) FROM (
        SELECT referrer_id, 1 AS n, CASE WHEN is_unique THEN 1 ELSE 0 END AS u FROM new_rows
        UNION ALL SELECT referrer_id, -1, CASE WHEN is_unique THEN -1 ELSE 0 END FROM old_rows) d
    GROUP BY 1 HAVING SUM(n) <> 0 OR SUM(u) <> 0;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE FUNCTION referrals_click_rollup_delete() RETURNS trigger AS $$
BEGIN
    INSERT INTO referrals_clickrollup (referrer_id, clicks, unique_clicks)
    SELECT referrer_id, -COUNT(*), -COUNT(*) FILTER (WHERE is_unique) FROM old_rows GROUP BY 1;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER referrals_referral_rollup_insert AFTER INSERT ON referrals_referral
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION referrals_referral_rollup_insert();
CREATE TRIGGER referrals_referral_rollup_update AFTER UPDATE ON referrals_referral
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION referrals_referral_rollup_update();
CREATE TRIGGER referrals_referral_rollup_delete AFTER DELETE ON referrals_referral
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION referrals_referral_rollup_delete();
CREATE TRIGGER referrals_click_rollup_insert AFTER INSERT ON referrals_click
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION referrals_click_rollup_insert();
CREATE TRIGGER referrals_click_rollup_update AFTER UPDATE ON referrals_click
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION referrals_click_rollup_update();
CREATE TRIGGER referrals_click_rollup_delete AFTER DELETE ON referrals_click
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION referrals_click_rollup_delete();
"""

PG_BACKWARD = """
DROP TRIGGER IF EXISTS referrals_referral_rollup_insert ON referrals_referral;
DROP TRIGGER IF EXISTS referrals_referral_rollup_update ON referrals_referral;
DROP TRIGGER IF EXISTS referrals_referral_rollup_delete ON referrals_referral;
DROP TRIGGER IF EXISTS referrals_click_rollup_insert ON referrals_click;
DROP TRIGGER IF EXISTS referrals_click_rollup_update ON referrals_click;
DROP TRIGGER IF EXISTS referrals_click_rollup_delete ON referrals_click;
DROP FUNCTION IF EXISTS referrals_referral_rollup_insert();
DROP FUNCTION IF EXISTS referrals_referral_rollup_update();
DROP FUNCTION IF EXISTS referrals_referral_rollup_delete();
DROP FUNCTION IF EXISTS referrals_click_rollup_insert();
DROP FUNCTION IF EXISTS referrals_click_rollup_update();
DROP FUNCTION IF EXISTS referrals_click_rollup_delete();
DROP INDEX IF EXISTS referrals_account_external_id_trgm;
DROP INDEX IF EXISTS referrals_account_email_trgm;
"""

# Django's `icontains` on PostgreSQL is UPPER(column::text) LIKE UPPER('%...%'): index that expression.
PG_TRIGRAM = """
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX IF NOT EXISTS referrals_account_external_id_trgm ON referrals_account
    USING gin (UPPER(external_id::text) gin_trgm_ops);
CREATE INDEX IF NOT EXISTS referrals_account_email_trgm ON referrals_account USING gin (UPPER(email::text) gin_trgm_ops);
"""


def _referral_row(row: str, sign: str) -> str:
    return (f"INSERT INTO referrals_referralrollup (referrer_id, status, referrals, spend, purchases) "
            f"VALUES ({row}.referrer_id, {row}.status, {sign}1, {sign}{row}.spend, {sign}{row}.purchases);")


def _click_row(row: str, sign: str) -> str:
    return (f"INSERT INTO referrals_clickrollup (referrer_id, clicks, unique_clicks) "
            f"VALUES ({row}.referrer_id, {sign}1, {sign}CASE WHEN {row}.is_unique THEN 1 ELSE 0 END);")


SQLITE_FORWARD = [
    f"CREATE TRIGGER referrals_referral_rollup_insert AFTER INSERT ON referrals_referral "
    f"BEGIN {_referral_row('NEW', '')} END",
    "CREATE TRIGGER referrals_referral_rollup_update AFTER UPDATE ON referrals_referral WHEN "
    "OLD.referrer_id IS NOT NEW.referrer_id OR OLD.status IS NOT NEW.status OR OLD.spend IS NOT NEW.spend "
    f"OR OLD.purchases IS NOT NEW.purchases BEGIN {_referral_row('OLD', '-')} {_referral_row('NEW', '')} END",
    f"CREATE TRIGGER referrals_referral_rollup_delete AFTER DELETE ON referrals_referral "
    f"BEGIN {_referral_row('OLD', '-')} END",
    f"CREATE TRIGGER referrals_click_rollup_insert AFTER INSERT ON referrals_click BEGIN {_click_row('NEW', '')} END",
    "CREATE TRIGGER referrals_click_rollup_update AFTER UPDATE ON referrals_click WHEN "
    "OLD.referrer_id IS NOT NEW.referrer_id OR OLD.is_unique IS NOT NEW.is_unique "
    f"BEGIN {_click_row('OLD', '-')} {_click_row('NEW', '')} END",
    f"CREATE TRIGGER referrals_click_rollup_delete AFTER DELETE ON referrals_click BEGIN {_click_row('OLD', '-')} END",
]
SQLITE_BACKWARD = [f"DROP TRIGGER IF EXISTS referrals_{table}_rollup_{op}"
                   for table in ("referral", "click") for op in ("insert", "update", "delete")]

BACKFILL = [
    """INSERT INTO referrals_referralrollup (referrer_id, status, referrals, spend, purchases)
       SELECT referrer_id, status, COUNT(*), SUM(spend), SUM(purchases) FROM referrals_referral GROUP BY 1, 2""",
    """INSERT INTO referrals_clickrollup (referrer_id, clicks, unique_clicks)
       SELECT referrer_id, COUNT(*), SUM(CASE WHEN is_unique THEN 1 ELSE 0 END) FROM referrals_click GROUP BY 1""",
]


def install(apps, schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FORWARD, params=None)
        try:
            # pg_trgm is a trusted extension (PostgreSQL 13+), but a locked-down role may still
            # not create it: the search then works, only slower.
            with transaction.atomic(using=schema_editor.connection.alias):
                schema_editor.execute(PG_TRIGRAM, params=None)
        except Exception as exc:  # noqa: BLE001
            log.warning("referral search index skipped: %s", exc)
    elif vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement, params=None)
    if vendor in ("postgresql", "sqlite"):
        for statement in BACKFILL:
            schema_editor.execute(statement, params=None)


def uninstall(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_BACKWARD, params=None)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_BACKWARD:
            schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ('referrals', '0006_ledger_line'),
    ]

    operations = [
        migrations.CreateModel(
            name='ClickRollup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('referrer_id', models.BigIntegerField(db_index=True)),
                ('clicks', models.BigIntegerField()),
                ('unique_clicks', models.BigIntegerField()),
            ],
        ),
        migrations.CreateModel(
            name='ReferralRollup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('referrer_id', models.BigIntegerField()),
                ('status', models.CharField(max_length=12)),
                ('referrals', models.BigIntegerField()),
                ('spend', models.BigIntegerField()),
                ('purchases', models.BigIntegerField()),
            ],
        ),
        migrations.AddIndex(
            model_name='referral',
            index=models.Index(fields=['referrer', '-created_at', '-id'], name='referral_referrer_newest'),
        ),
        migrations.AddIndex(
            model_name='referralrollup',
            index=models.Index(fields=['referrer_id', 'status'], name='referrals_r_referre_f6c374_idx'),
        ),
        migrations.RunPython(install, uninstall),
    ]
