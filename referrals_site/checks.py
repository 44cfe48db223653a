"""System checks of the deployment's own settings (registered by backoffice.apps).

`development_secrets` (deploy only, error level): `manage.py check --deploy` fails while a
credential still holds its development default from settings.py / .env.example, or is empty. A
forgotten `STRIPE_WEBHOOK_SECRET` would otherwise leave `whsec_dev_only` in place and let anyone
who has read this repository sign webhooks that move payouts.
"""
from django.conf import settings
from django.core import checks

# Setting -> the development values it must not hold in production (settings.py defaults, and
# .env.example's placeholder for SECRET_KEY).
DEVELOPMENT_VALUES = {
    "SECRET_KEY": ("dev-only-insecure-secret-key-change-me", "change-me"),
    "STRIPE_SECRET_KEY": ("sk_test_dev_only",),
    "STRIPE_WEBHOOK_SECRET": ("whsec_dev_only",),
    "PAYPAL_CLIENT_ID": ("dev-client-id",),
    "PAYPAL_CLIENT_SECRET": ("dev-client-secret",),
    "WISE_API_TOKEN": ("dev-wise-token",),
}
# The environment variable that sets each one (settings.py).
ENVIRONMENT = {"SECRET_KEY": "DJANGO_SECRET_KEY"}


def development_secrets(app_configs, **kwargs) -> list[checks.Error]:
    errors = []
    for number, (name, development) in enumerate(DEVELOPMENT_VALUES.items(), start=1):
        value = str(getattr(settings, name, "") or "").strip()
        if value and value not in development:
            continue
        what = "is empty" if not value else "still holds its development default"
        variable = ENVIRONMENT.get(name, name)
        # The value itself is never printed: check output ends up in CI logs.
        errors.append(checks.Error(
            f"{name} {what}; a production deployment must not run with it.",
            hint=f"Set {variable} in the environment to the real secret (see docs/deploy.md); "
                 f"{name} must be neither empty nor a development value.",
            id=f"portal.E{number:03d}"))
    return errors


def register() -> None:
    checks.register(development_secrets, checks.Tags.security, deploy=True)
