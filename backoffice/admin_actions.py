"""Third-party admins whose actions do not check a permission, re-registered with ones that do.

django-celery-beat's periodic task actions (enable, disable, toggle, run) and django-axes'
"clean up expired attempts" only need the view permission as shipped, so support staff, who may
view everything, could stop the jobs or wipe login attempts. The rule for every admin action of
the portal (tests/test_admin_roles.py walks them all): it declares its permissions, and only
actions that read (the CSV export) make do with "view".
"""
from django.contrib import admin


def _requiring(permission: str, method):
    def action(modeladmin, request, queryset):
        return method(modeladmin, request, queryset)

    action.__name__ = method.__name__
    action.short_description = getattr(method, "short_description", method.__name__.replace("_", " "))
    action.allowed_permissions = (permission,)
    return action


def _reregister(model, permission_of: dict[str, str]) -> None:
    current = admin.site._registry.get(model)
    if current is None:
        return
    base = type(current)
    checked = type(f"Checked{base.__name__}", (base,),
                   {name: _requiring(permission, getattr(base, name)) for name, permission in permission_of.items()})
    checked.__module__ = __name__
    admin.site.unregister(model)
    admin.site.register(model, checked)


def install() -> None:
    """Called once the admin has autodiscovered every app's admin module (backoffice.apps)."""
    from axes.models import AccessAttempt
    from django_celery_beat.models import PeriodicTask

    _reregister(PeriodicTask, {"enable_tasks": "change", "disable_tasks": "change", "toggle_tasks": "change",
                               "run_tasks": "change"})
    _reregister(AccessAttempt, {"cleanup_expired_attempts": "delete"})
