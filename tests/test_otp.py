"""Two-factor sign-in for staff (backoffice.otp): the admin needs a code once a staff user has an
authenticator, codes are checked and never accepted twice, enrolment, the mandatory mode and the
lock-out. Codes are computed from the device key with django-otp's own TOTP implementation."""

import re

import pytest
from django.contrib.auth import get_user_model
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from referrals.models import AuditLog
from tests.test_security import OPEN_REDIRECT_PAYLOADS

PASSWORD = "pw-sam-12345"


@pytest.fixture
def sam(db):
    """A staff member (all admin permissions, so the pages show everything)."""
    return get_user_model().objects.create_user(
        "sam@operator.test", "sam@operator.test", PASSWORD, is_staff=True, is_superuser=True
    )


@pytest.fixture
def device(sam):
    return TOTPDevice.objects.create(user=sam, name="phone", confirmed=True)


@pytest.fixture
def no_code_throttle(settings):
    # django-otp slows down guessing (1 s, 2 s, 4 s ... after each wrong code); tests that send a
    # wrong code and then the right one switch that off.
    settings.OTP_TOTP_THROTTLE_FACTOR = 0


def code(device: TOTPDevice) -> str:
    device.refresh_from_db()
    return TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).token()


def admin_login(client, token: str | None = None, password: str = PASSWORD, **extra):
    data = {"username": "sam@operator.test", "password": password, "next": "/admin/", **extra}
    if token is not None:
        data["otp_token"] = str(token).zfill(6)
    return client.post("/admin/login/?next=/admin/", data)


def _signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def _admin_opens(client) -> bool:
    return client.get("/admin/").status_code == 200


# --------------------------------------------------------------------------- optional mode


def test_staff_without_an_authenticator_open_the_admin_with_the_password_alone(client, sam):
    assert admin_login(client).status_code == 302
    assert _admin_opens(client)
    assert "Two-factor sign-in" in client.get("/admin/").content.decode(), "the enrolment page is linked"


def test_it_keeps_staff_with_an_authenticator_out_without_a_code(client, device):
    page = admin_login(client)
    assert page.status_code == 200
    assert "authenticator code is wrong" in page.content.decode()
    assert not _signed_in(client)
    assert client.get("/admin/").status_code == 302


def test_it_refuses_a_wrong_code_and_changes_nothing(client, device):
    right = code(device)
    wrong = (int(right) + 1) % 1_000_000
    page = admin_login(client, wrong)
    assert page.status_code == 200 and "authenticator code is wrong" in page.content.decode()
    assert not _signed_in(client)
    device.refresh_from_db()
    assert device.last_used_at is None and device.last_t == -1


def test_a_wrong_password_with_the_right_code_is_refused(client, device):
    assert admin_login(client, code(device), password="not-the-password").status_code == 200
    assert not _signed_in(client)


def test_the_right_code_opens_the_admin_and_marks_the_session_verified(client, device):
    assert admin_login(client, code(device)).status_code == 302
    assert client.session["otp_device_id"] == device.persistent_id
    assert _admin_opens(client)


def test_a_code_is_accepted_once_only(client, device):
    token = code(device)
    assert admin_login(client, token).status_code == 302
    client.logout()
    replay = admin_login(client, token)
    assert replay.status_code == 200 and not _signed_in(client)


def test_guessing_is_slowed_down_after_a_wrong_code(client, device):
    admin_login(client, (int(code(device)) + 1) % 1_000_000)
    assert admin_login(client, code(device)).status_code == 200, "throttled right after a failure"
    assert not _signed_in(client)


def test_a_password_only_portal_session_does_not_open_the_admin_for_staff_with_an_authenticator(client, device):
    assert client.post("/login/", {"username": "sam@operator.test", "password": PASSWORD}).status_code == 302
    assert _signed_in(client)
    response = client.get("/admin/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    page = client.get(response["Location"]).content.decode()
    assert "sign in again with your password and the code" in page


def test_customers_never_open_the_admin(client, db):
    get_user_model().objects.create_user("carol", "carol@example.com", "pw-carol-12345")
    client.post("/admin/login/", {"username": "carol", "password": "pw-carol-12345"})
    assert client.get("/admin/").status_code == 302
    assert client.get("/admin/two-factor/").status_code == 302


# --------------------------------------------------------------------------- enrolment


def test_staff_enrol_by_confirming_a_first_code(client, sam, no_code_throttle):
    admin_login(client)
    page = client.get("/admin/two-factor/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'src="data:image/svg+xml' in html
    pending = TOTPDevice.objects.get(user=sam)
    assert not pending.confirmed
    assert client.get("/admin/two-factor/").status_code == 200
    assert TOTPDevice.objects.filter(user=sam).count() == 1, "reloading keeps the same key"

    wrong = client.post("/admin/two-factor/", {"otp_token": f"{(int(code(pending)) + 1) % 1_000_000:06d}"})
    assert wrong.status_code == 200 and "does not match" in wrong.content.decode()
    assert not TOTPDevice.objects.get(pk=pending.pk).confirmed

    done = client.post("/admin/two-factor/", {"otp_token": code(pending), "next": "/admin/"})
    assert done.status_code == 302 and done["Location"] == "/admin/"
    assert TOTPDevice.objects.get(pk=pending.pk).confirmed
    assert AuditLog.objects.filter(action="staff.otp_enrolled", actor=sam).exists()
    assert _admin_opens(client), "the enrolling session is verified"
    assert "Two-factor sign-in is <strong>on</strong>" in client.get("/admin/two-factor/").content.decode()

    client.logout()
    assert admin_login(client).status_code == 200, "from now on the admin asks for a code"


def test_the_secret_shown_is_the_device_key(client, sam):
    admin_login(client)
    html = client.get("/admin/two-factor/").content.decode()
    shown = re.search(r"<code>([A-Z2-7 ]+)</code>", html).group(1).replace(" ", "")
    from base64 import b32decode

    assert b32decode(shown) == TOTPDevice.objects.get(user=sam).bin_key


def test_a_password_only_session_cannot_swap_in_its_own_authenticator(client, device):
    client.post("/login/", {"username": "sam@operator.test", "password": PASSWORD})
    response = client.get("/admin/two-factor/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert client.post("/admin/two-factor/", {"otp_token": "123456"}).status_code == 302
    assert list(TOTPDevice.objects.values_list("pk", flat=True)) == [device.pk]


def test_anonymous_visitors_are_sent_to_the_login(client, db):
    response = client.get("/admin/two-factor/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert not TOTPDevice.objects.exists()


@pytest.mark.parametrize("payload", OPEN_REDIRECT_PAYLOADS)
def test_enrolment_next_never_redirects_to_another_host(client, sam, payload):
    admin_login(client)
    client.get("/admin/two-factor/")
    pending = TOTPDevice.objects.get(user=sam)
    response = client.post(f"/admin/two-factor/?next={payload}", {"otp_token": code(pending), "next": payload})
    if "\x00" in payload:  # refused outright (referrals_site.text): no redirect at all
        assert response.status_code == 400
        return
    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith("/") and not location.startswith("//") and not location.startswith("/\\"), location


# --------------------------------------------------------------------------- mandatory mode


def test_when_required_staff_without_an_authenticator_are_sent_to_enrol(client, sam, settings):
    settings.STAFF_OTP_REQUIRED = True
    assert admin_login(client).status_code == 302
    assert client.get("/admin/").status_code == 302
    login_page = client.get("/admin/login/")
    assert login_page.status_code == 302 and login_page["Location"] == "/admin/two-factor/"
    page = client.get("/admin/two-factor/").content.decode()
    assert "must use two-factor sign-in" in page
    pending = TOTPDevice.objects.get(user=sam)
    client.post("/admin/two-factor/", {"otp_token": code(pending)})
    assert _admin_opens(client)


def test_when_required_staff_with_an_authenticator_sign_in_as_usual(client, device, settings):
    settings.STAFF_OTP_REQUIRED = True
    assert admin_login(client, code(device)).status_code == 302
    assert _admin_opens(client)


# --------------------------------------------------------------------------- lock-out and headers


def test_wrong_passwords_still_lock_the_admin_login(client, device, settings):
    settings.AXES_ENABLED = True
    for _ in range(settings.AXES_FAILURE_LIMIT):
        admin_login(client, password="wrong")
    locked = admin_login(client, code(device))
    assert locked.status_code == 429
    assert not _signed_in(client)


def test_wrong_codes_count_towards_the_lock_out(client, device, settings, no_code_throttle):
    settings.AXES_ENABLED = True
    for _ in range(settings.AXES_FAILURE_LIMIT):
        admin_login(client, "000000" if code(device) != "000000" else "111111")
    locked = admin_login(client, code(device))
    assert locked.status_code == 429
    assert not _signed_in(client)


def test_the_new_pages_satisfy_the_content_security_policy(client, sam):
    pages = [client.get("/admin/login/")]
    admin_login(client)
    pages.append(client.get("/admin/two-factor/"))
    for page in pages:
        assert page.status_code == 200
        policy = page["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "img-src 'self' data:" in policy
        html = page.content.decode()
        assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", html)), "no inline script"
        assert not re.search(r"\sstyle=\"|\son[a-z]+=\"", html)
