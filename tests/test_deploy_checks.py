"""The deploy check refuses development secrets (issue 15.6): `check --deploy` fails (error level)
while the Stripe webhook secret, the Stripe key, the PayPal or Wise credentials or Django's
SECRET_KEY still hold their development defaults or are empty, so a deployment that forgot one
cannot accept forged webhooks. The check is called directly, then through `manage.py check --deploy`
as `make audit` runs it."""
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks

from referrals_site.checks import development_secrets

ROOT = Path(__file__).resolve().parent.parent
# What `make audit` sets: non-development placeholders for every credential (none of them real).
AUDIT_ENV = {"STRIPE_SECRET_KEY": "sk_live_audit_placeholder", "STRIPE_WEBHOOK_SECRET": "whsec_audit_placeholder",
             "PAYPAL_CLIENT_ID": "audit-placeholder", "PAYPAL_CLIENT_SECRET": "audit-placeholder",
             "WISE_API_TOKEN": "audit-placeholder"}


@pytest.fixture
def production(settings):
    settings.SECRET_KEY = secrets.token_urlsafe(64)
    for name, value in AUDIT_ENV.items():
        setattr(settings, name, value)
    return settings


def _ids(errors):
    return sorted(e.id for e in errors)


def test_production_values_pass(production):
    assert development_secrets(None) == []


@pytest.mark.parametrize("name, value", [
    ("STRIPE_WEBHOOK_SECRET", "whsec_dev_only"), ("STRIPE_SECRET_KEY", "sk_test_dev_only"),
    ("PAYPAL_CLIENT_ID", "dev-client-id"), ("PAYPAL_CLIENT_SECRET", "dev-client-secret"),
    ("WISE_API_TOKEN", "dev-wise-token"), ("SECRET_KEY", "dev-only-insecure-secret-key-change-me"),
    ("SECRET_KEY", "change-me"), ("STRIPE_WEBHOOK_SECRET", ""), ("STRIPE_WEBHOOK_SECRET", "   "),
])
def test_each_development_or_empty_secret_is_an_error_naming_the_setting(production, name, value):
    setattr(production, name, value)
    errors = development_secrets(None)
    assert len(errors) == 1, errors
    assert errors[0].level == checks.ERROR
    assert name in errors[0].msg and name in errors[0].hint
    assert value.strip() == "" or value not in errors[0].msg  # the secret itself is never printed


def test_the_check_is_registered_for_deploy_only():
    assert development_secrets in checks.registry.registry.get_checks(include_deployment_checks=True)
    assert development_secrets not in checks.registry.registry.get_checks(include_deployment_checks=False)


def _check_deploy(extra: dict) -> subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items()
                 if k != "DJANGO_ALLOW_ASYNC_UNSAFE" and k not in AUDIT_ENV}
    env = {**inherited, "DJANGO_SECURE": "true", "DJANGO_DEBUG": "false",
           "DJANGO_SECRET_KEY": secrets.token_urlsafe(64), "DJANGO_ALLOWED_HOSTS": "referrals.example.com",
           "DATABASE_URL": "sqlite:////tmp/check-deploy.sqlite3", **extra}
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_fails_on_the_development_stripe_secrets():
    result = _check_deploy({})
    assert result.returncode != 0
    assert "STRIPE_WEBHOOK_SECRET" in result.stderr and "STRIPE_SECRET_KEY" in result.stderr
    assert "whsec_dev_only" not in result.stderr
    assert _check_deploy(AUDIT_ENV).returncode == 0
