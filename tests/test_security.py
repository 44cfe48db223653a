"""Security headers, login throttling, production settings and redirects that stay on the host."""
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

ROOT = Path(__file__).resolve().parent.parent
OPEN_REDIRECT_PAYLOADS = ["//evil.com", "\\\\evil.com", "http:\\\\\\evil.com", "https://evil.com", "///evil.com",
                          "/\\evil.com", "http://evil.com", "//evil.com/%2F..", "javascript:alert(1)",
                          "\x00//evil.com", " //evil.com", "/%09/evil.com", "https:evil.com", "//127.0.0.1@evil.com"]


@pytest.fixture
def alice_user(db):
    return get_user_model().objects.create_user("alice@example.com", "alice@example.com", "correct-horse-42")


def test_every_page_sends_a_strict_content_security_policy(client, db):
    for path in ("/", "/login/", "/signup/", "/admin/login/"):
        policy = client.get(path)["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy, path
        assert "frame-ancestors 'none'" in policy


def test_it_sends_the_other_security_headers(client, db):
    response = client.get("/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "strict-origin-when-cross-origin"


def test_no_template_has_inline_script_style_or_event_handlers():
    offenders = []
    for path in list((ROOT / "templates").rglob("*.html")) + list(ROOT.glob("*/templates/**/*.html")):
        text = path.read_text()
        if re.search(r"<script(?![^>]*\bsrc=)(?![^>]*application/(ld\+)?json)[^>]*>", text) \
                or re.search(r"\sstyle=\"", text) or re.search(r"\son[a-z]+=\"", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_production_settings_pass_check_deploy_at_warning_level():
    from tests.test_deploy_checks import AUDIT_ENV  # what `make audit` sets: no development secrets

    # The browser tests allow async-unsafe calls in this process; production never does.
    inherited = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {**inherited, "DJANGO_SECURE": "true", "DJANGO_DEBUG": "false",
           "DJANGO_SECRET_KEY": secrets.token_urlsafe(64), "DJANGO_ALLOWED_HOSTS": "referrals.example.com",
           "DATABASE_URL": "sqlite:////tmp/check-deploy.sqlite3", **AUDIT_ENV}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_switch_turns_on_hsts_and_secure_cookies():
    result = subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='referrals_site.settings';"
         "django.setup(); from django.conf import settings as s;"
         "print(s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT)"],
        cwd=ROOT, env={**os.environ, "DJANGO_SECURE": "true"}, capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["31536000", "True", "True", "True"]


def test_it_locks_out_a_username_after_five_failed_logins(client, alice_user, settings):
    settings.AXES_ENABLED = True
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": "alice@example.com", "password": "wrong"})
    locked = client.post("/login/", {"username": "alice@example.com", "password": "correct-horse-42"})
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_success_before_the_limit_resets_the_count(client, alice_user, settings):
    settings.AXES_ENABLED = True
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        client.post("/login/", {"username": "alice@example.com", "password": "wrong"})
    assert client.post("/login/", {"username": "alice@example.com", "password": "correct-horse-42"}).status_code == 302


@pytest.mark.parametrize("payload", OPEN_REDIRECT_PAYLOADS)
def test_login_next_never_redirects_to_another_host(client, alice_user, payload):
    response = client.post(f"/login/?next={payload}", {"username": "alice@example.com",
                                                        "password": "correct-horse-42", "next": payload})
    if "\x00" in payload:  # refused outright (referrals_site.text): no redirect at all
        assert response.status_code == 400
        return
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith("/") and not location.startswith("//") and not location.startswith("/\\"), location


def _stays_on_host(location: str) -> bool:
    return location.startswith("/") and not location.startswith("//") and not location.startswith("/\\")


@pytest.mark.parametrize("payload", OPEN_REDIRECT_PAYLOADS)
def test_admin_login_and_logout_next_never_redirect_to_another_host(client, db, payload):
    get_user_model().objects.create_user("sam@operator.test", "sam@operator.test", "pw-sam-12345", is_staff=True)
    login = client.post(f"/admin/login/?next={payload}", {"username": "sam@operator.test", "password": "pw-sam-12345",
                                                          "next": payload})
    if "\x00" in payload:  # refused outright (referrals_site.text): no redirect at all
        assert login.status_code == 400
        return
    assert login.status_code == 302 and _stays_on_host(login["Location"]), login["Location"]
    for path in ("/admin/logout/", "/logout/"):
        client.login(username="sam@operator.test", password="pw-sam-12345")
        logout = client.post(f"{path}?next={payload}", {"next": payload})
        assert logout.status_code in (200, 302), path
        if logout.status_code == 302:
            assert _stays_on_host(logout["Location"]), (path, logout["Location"])


@pytest.mark.parametrize("payload", OPEN_REDIRECT_PAYLOADS)
def test_the_ref_link_never_redirects_to_another_host(client, db, payload):
    response = client.get("/", {"ref": "abcdefgh", "next": payload}, PATH_INFO="/" + payload.lstrip("/"))
    if response.status_code in (301, 302):
        location = response["Location"]
        assert location.startswith("/") and not location.startswith("//") and "\\" not in location[:2], location


def test_the_api_docs_page_loads_its_script_separately_under_the_csp(client, db):
    page = client.get("/api/docs/").content.decode()
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts and all("src=" in tag for tag in scripts), scripts
    assert client.get("/api/docs/?script=").status_code == 200
