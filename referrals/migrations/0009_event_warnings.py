from django.db import migrations, models


class Migration(migrations.Migration):
    """Event.warnings: the fields of an accepted event that were ignored (a sign-up's unknown,
    malformed or disabled referral code or unknown click), so a replay ignores them too. Nullable without a default, so SQLite adds the column
    in place instead of rebuilding the table (which a trigger of migration 0006 refers to)."""

    dependencies = [("referrals", "0008_program_versions")]

    operations = [
        migrations.AddField(model_name="event", name="warnings", field=models.JSONField(blank=True, null=True)),
    ]
