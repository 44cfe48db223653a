"""Staff roles as Django groups. Support reads everything and works the fraud desk;
finance works payouts and adjustments. Admin actions check these permissions server-side: every
action declares the permission it needs (third-party admins are re-registered with them in
backoffice/admin_actions.py), and only read-only actions (the CSV export) make do with "view", so
reading everything never lets support revoke a key, stop or run a periodic job, re-enable a
webhook endpoint or redeliver one. Secrets are never shown back after creation (API keys, the
webhook signing secret: masked in the admin)."""
from django.contrib.auth.models import Group, Permission
from django.db.models import Q

ROLES = {
    "support": {
        "view_all": True,
        "codenames": ["referrals.change_fraudflag"],
    },
    "finance": {
        "view_all": True,
        "codenames": ["backoffice.add_adjustment", "referrals.change_application"],
        "apps": ["payouts"],  # every permission of the payouts app
    },
}


def setup_roles() -> dict[str, int]:
    """Create or update the groups (idempotent); returns how many permissions each has."""
    counts = {}
    for name, spec in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        wanted = Q(pk__in=[])
        if spec.get("view_all"):
            wanted |= Q(codename__startswith="view_")
        for dotted in spec.get("codenames", []):
            app_label, codename = dotted.split(".")
            wanted |= Q(content_type__app_label=app_label, codename=codename)
        for app_label in spec.get("apps", []):
            wanted |= Q(content_type__app_label=app_label)
        permissions = list(Permission.objects.filter(wanted))
        group.permissions.set(permissions)
        counts[name] = len(permissions)
    return counts
