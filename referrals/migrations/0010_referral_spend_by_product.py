"""Net usage spend per product on the referral (`Referral.spend_by_product`), backfilled from the
applied usage events net of refunds. The engine read it from the event log on every batch
(an aggregate over each referred account's whole history); now it is on the row it locks.

The column is added with `ALTER TABLE ... ADD COLUMN` on both databases: Django's SQLite
schema editor would rebuild `referrals_referral`, which breaks the rollup triggers that name it
(`referrals.engine.rollups`)."""
from django.db import migrations, models

ADD_COLUMN = {
    "postgresql": "ALTER TABLE referrals_referral ADD COLUMN spend_by_product jsonb DEFAULT '{}'::jsonb NOT NULL",
    "sqlite": "ALTER TABLE referrals_referral ADD COLUMN spend_by_product text DEFAULT '{}' NOT NULL "
              "CHECK ((JSON_VALID(spend_by_product) OR spend_by_product IS NULL))",
}
DROP_COLUMN = "ALTER TABLE referrals_referral DROP COLUMN spend_by_product"

BACKFILL = {
    "postgresql": """
        UPDATE referrals_referral r SET spend_by_product = s.by_product FROM (
            SELECT account_id, jsonb_object_agg(product, net) AS by_product FROM (
                SELECT account_id, product, SUM(amount - refunded) AS net FROM referrals_event
                WHERE type = 'usage.charged' AND applied_at IS NOT NULL AND account_id IS NOT NULL
                GROUP BY account_id, product) per_product
            GROUP BY account_id) s
        WHERE r.referred_id = s.account_id""",
    "sqlite": """
        UPDATE referrals_referral SET spend_by_product = COALESCE((
            SELECT json_group_object(product, net) FROM (
                SELECT product, SUM(amount - refunded) AS net FROM referrals_event e
                WHERE e.account_id = referrals_referral.referred_id AND e.type = 'usage.charged'
                AND e.applied_at IS NOT NULL GROUP BY product)), '{}')""",
}

FIELD = models.JSONField(
    blank=True, default=dict, db_default=models.Value({}, output_field=models.JSONField()),
    help_text="Net usage spend per product (ledger units): what a product milestone counts, kept by the engine and "
              "refunds so that applying a charge never sums the account's history.")


def forward(apps, schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    schema_editor.execute(ADD_COLUMN[vendor], params=None)
    schema_editor.execute(BACKFILL[vendor], params=None)


def backward(apps, schema_editor) -> None:
    schema_editor.execute(DROP_COLUMN, params=None)


class Migration(migrations.Migration):
    dependencies = [("referrals", "0009_event_warnings")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddField(model_name="referral", name="spend_by_product", field=FIELD)],
            database_operations=[migrations.RunPython(forward, backward)],
        ),
    ]
