"""Every admin action checks a permission, and secrets are never shown back (issue 15.5).

One rule for every registered ModelAdmin, ours and third-party (django-celery-beat, axes): each
action declares the permissions it needs, and only read-only actions make do with "view". Then,
per role through the admin client, the writes support staff could make with view permission alone:
revoking an API key, disabling / enabling / toggling / running periodic tasks, re-enabling a
webhook endpoint, redelivering a webhook, cleaning up axes attempts; and the outbound webhook
signing secret, shown once on creation and masked afterwards."""
import uuid

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.test import RequestFactory
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from backoffice.roles import setup_roles
from integrations.models import WebhookDelivery, WebhookEndpoint
from referrals.api.keys import api_key_create
from referrals.models import ApiKey

# Actions that only read (they write nothing): "view" is enough for them.
READ_ONLY_ACTIONS = {"export_csv"}


def _staff(username, *groups, superuser=False):
    user = get_user_model().objects.create_user(username, f"{username}@operator.test", "pw-12345-staff",
                                                is_staff=True, is_superuser=superuser)
    setup_roles()
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    return user


@pytest.fixture
def roles(db):
    return {"support": _staff("sue", "support"), "finance": _staff("fiona", "finance"),
            "superuser": _staff("boss", superuser=True)}


def test_every_action_of_every_admin_declares_its_permissions(roles):
    undeclared, view_only = [], []
    for model, model_admin in admin.site._registry.items():
        for func, name, _ in model_admin._get_base_actions():
            label = f"{model._meta.label}.{name}"
            permissions = getattr(func, "allowed_permissions", ())
            if not permissions:
                undeclared.append(label)
            elif set(permissions) <= {"view"} and name not in READ_ONLY_ACTIONS:
                view_only.append(label)
    assert undeclared == []
    assert view_only == []


@pytest.mark.parametrize("role", ["support", "finance"])
def test_a_role_sees_only_the_actions_its_permissions_allow(roles, role):
    user = roles[role]
    request = RequestFactory().get("/admin/")
    request.user = user
    for model, model_admin in admin.site._registry.items():
        for name, (func, _, _) in model_admin.get_actions(request).items():
            if name in READ_ONLY_ACTIONS:
                continue
            needed = [getattr(model_admin, f"has_{p}_permission")(request) for p in func.allowed_permissions]
            assert all(needed), f"{role} may run {model._meta.label}.{name}"
            opts = model._meta
            if func.allowed_permissions == ("view",):
                assert user.has_perm(f"{opts.app_label}.change_{opts.model_name}")


def _act(client, url, action, pks):
    return client.post(url, {"action": action, "_selected_action": [str(pk) for pk in pks]})


@pytest.mark.parametrize("role", ["support", "finance"])
def test_staff_without_the_permission_cannot_revoke_a_key(client, roles, role):
    key, _ = api_key_create(name="partner", scopes=["read"])
    client.force_login(roles[role])
    _act(client, "/admin/referrals/apikey/", "revoke", [key.pk])
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None
    client.force_login(roles["superuser"])
    _act(client, "/admin/referrals/apikey/", "revoke", [key.pk])
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None


@pytest.fixture
def task(db):
    every = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.MINUTES)
    return PeriodicTask.objects.create(name="sweep", task="referrals.run_job", interval=every, enabled=True)


@pytest.mark.parametrize("role", ["support", "finance"])
@pytest.mark.parametrize("action", ["disable_tasks", "toggle_tasks", "run_tasks"])
def test_staff_without_the_permission_cannot_touch_periodic_tasks(client, roles, task, role, action):
    client.force_login(roles[role])
    before = PeriodicTask.objects.values().get(pk=task.pk)
    _act(client, "/admin/django_celery_beat/periodictask/", action, [task.pk])
    assert PeriodicTask.objects.values().get(pk=task.pk) == before


def test_a_superuser_still_disables_and_enables_periodic_tasks(client, roles, task):
    client.force_login(roles["superuser"])
    _act(client, "/admin/django_celery_beat/periodictask/", "disable_tasks", [task.pk])
    assert PeriodicTask.objects.get(pk=task.pk).enabled is False
    _act(client, "/admin/django_celery_beat/periodictask/", "enable_tasks", [task.pk])
    assert PeriodicTask.objects.get(pk=task.pk).enabled is True


@pytest.fixture
def disabled_endpoint(db):
    return WebhookEndpoint.objects.create(url="https://hooks.example.com/x", is_active=False,
                                          consecutive_failures=20, disabled_at=timezone.now(),
                                          disabled_reason="20 failures in a row")


@pytest.mark.parametrize("role", ["support", "finance"])
def test_staff_without_the_permission_cannot_re_enable_an_endpoint_or_redeliver(client, roles, disabled_endpoint,
                                                                                role):
    delivery = WebhookDelivery.objects.create(endpoint=disabled_endpoint, message_id=uuid.uuid4(), kind="payout.paid",
                                              payload={}, status="failed")
    client.force_login(roles[role])
    _act(client, "/admin/integrations/webhookendpoint/", "enable", [disabled_endpoint.pk])
    assert WebhookEndpoint.objects.get(pk=disabled_endpoint.pk).is_active is False
    _act(client, "/admin/integrations/webhookdelivery/", "redeliver", [delivery.pk])
    assert WebhookDelivery.objects.count() == 1
    client.force_login(roles["superuser"])
    _act(client, "/admin/integrations/webhookendpoint/", "enable", [disabled_endpoint.pk])
    assert WebhookEndpoint.objects.get(pk=disabled_endpoint.pk).is_active is True


def test_the_signing_secret_is_shown_once_on_creation_and_masked_afterwards(client, roles):
    client.force_login(roles["superuser"])
    added = client.post("/admin/integrations/webhookendpoint/add/",
                        {"url": "https://hooks.example.com/referrals", "is_active": "on"})
    assert added.status_code == 302
    endpoint = WebhookEndpoint.objects.get()
    shown = [str(m) for m in get_messages(added.wsgi_request)]
    assert any(endpoint.secret in m for m in shown), shown
    # The page the creation leads to shows it, once; no page shows it again.
    assert endpoint.secret.encode() in client.get(added.url).content
    for role in ("superuser", "support", "finance"):
        client.force_login(roles[role])
        for url in ("/admin/integrations/webhookendpoint/",
                    f"/admin/integrations/webhookendpoint/{endpoint.pk}/change/"):
            page = client.get(url)
            assert page.status_code == 200, (role, url)
            assert endpoint.secret.encode() not in page.content, (role, url)
            assert endpoint.secret[6:].encode() not in page.content
    client.force_login(roles["support"])
    assert endpoint.secret[-4:].encode() in client.get(
        f"/admin/integrations/webhookendpoint/{endpoint.pk}/change/").content  # the masked form


def test_support_cannot_clean_up_login_attempts(client, roles):
    from axes.models import AccessAttempt

    attempt = AccessAttempt.objects.create(username="x", ip_address="203.0.113.1", user_agent="", path_info="/",
                                           failures_since_start=3,
                                           attempt_time=timezone.now() - timezone.timedelta(days=30))
    client.force_login(roles["support"])
    _act(client, "/admin/axes/accessattempt/", "cleanup_expired_attempts", [attempt.pk])
    assert AccessAttempt.objects.filter(pk=attempt.pk).exists()
