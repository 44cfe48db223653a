"""Two-factor sign-in for staff: TOTP authenticator apps through django-otp.

Optional by default: a staff user who has confirmed an authenticator needs its code to use the
admin; without one the password is enough, unless STAFF_OTP_REQUIRED sends every staff user to
enrol first. The admin site (backoffice.sites) asks `otp_state` on every admin request.
"""

from base64 import b32encode

import segno
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.signals import user_login_failed
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.db import transaction
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django_otp import login as otp_login
from django_otp import match_token, user_has_device
from django_otp.plugins.otp_totp.models import TOTPDevice

from referrals.models import AuditLog

# What a signed-in staff user still needs before the admin opens.
VERIFIED = "verified"  # the session passed an authenticator code
NOT_NEEDED = "not-needed"  # no authenticator and none required
NEEDS_CODE = "needs-code"  # has an authenticator, this session has not given a code
NEEDS_ENROLMENT = "needs-enrolment"  # none yet, but STAFF_OTP_REQUIRED


def otp_state(request) -> str:
    """Computed once per request (the admin asks several times while rendering a page)."""
    cached = getattr(request, "_staff_otp_state", None)
    if cached is None:
        user = request.user
        if getattr(user, "is_verified", None) and user.is_verified():
            cached = VERIFIED
        elif user_has_device(user, confirmed=True):
            cached = NEEDS_CODE
        elif settings.STAFF_OTP_REQUIRED:
            cached = NEEDS_ENROLMENT
        else:
            cached = NOT_NEEDED
        request._staff_otp_state = cached
    return cached


class StaffLoginForm(AdminAuthenticationForm):
    """The admin's login form with a code field, required once the user has an authenticator."""

    otp_token = forms.CharField(
        label="Authenticator code",
        required=False,
        max_length=10,
        help_text="The 6-digit code from your authenticator app, if you have set up two-factor sign-in.",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "invalid_token": "The authenticator code is wrong or has been used already. Enter the current code.",
    }

    def clean(self):
        cleaned = super().clean()  # the password first: django-axes counts its failures
        user = self.user_cache
        if user is not None and user_has_device(user, confirmed=True):
            token = (cleaned.get("otp_token") or "").strip()
            # match_token refuses a code already used (each device remembers its last time step)
            # and slows down guessing (django-otp throttling).
            device = match_token(user, token) if token else None
            if device is None:
                # A wrong code counts as a failed login for the lock-out, like a wrong password.
                user_login_failed.send(
                    sender=__name__, credentials={"username": user.get_username()}, request=self.request
                )
                raise ValidationError(self.error_messages["invalid_token"], code="invalid_token")
            user.otp_device = device  # django_otp marks the session verified on login
        return cleaned


class EnrolForm(forms.Form):
    otp_token = forms.CharField(
        label="Code from the app",
        max_length=10,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
    )

    def __init__(self, *args, device: TOTPDevice, **kwargs):
        self.device = device
        super().__init__(*args, **kwargs)

    def clean_otp_token(self):
        token = self.cleaned_data["otp_token"].strip()
        if not self.device.verify_token(token):
            raise ValidationError("This code does not match. Enter the code your app shows now.")
        return token


def _safe_next(request, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    allowed = url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return target if allowed else default


@never_cache
def enrol(request, *, admin_site):
    """Set up an authenticator app: scan the code (or type the key), confirm with a first code."""
    user = request.user
    if not (user.is_active and user.is_staff):
        return redirect_to_login(request.get_full_path(), reverse("admin:login", current_app=admin_site.name))
    state = otp_state(request)
    if state == NEEDS_CODE:
        # Someone with only the password must not swap in an authenticator of their own.
        messages.info(request, "Sign in with your authenticator code first.")
        return redirect_to_login(request.get_full_path(), reverse("admin:login", current_app=admin_site.name))
    context = {
        **admin_site.each_context(request),
        "title": "Two-factor sign-in",
        "next": _safe_next(request, reverse("admin:index", current_app=admin_site.name)),
    }
    if state == VERIFIED:
        context["device"] = user.otp_device
        return TemplateResponse(request, "admin/otp_enrol.html", context)

    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("id").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)
    form = EnrolForm(request.POST or None, device=device)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            TOTPDevice.objects.filter(user=user, confirmed=False).delete()
            AuditLog.objects.create(
                actor=user,
                action="staff.otp_enrolled",
                object_type="User",
                object_id=str(user.pk),
                data={"device": device.persistent_id},
            )
        otp_login(request, device)
        messages.success(request, "Two-factor sign-in is on. The admin will ask for a code at every sign-in.")
        return redirect(context["next"])
    key = b32encode(device.bin_key).decode()
    context.update(
        {
            "form": form,
            "required": state == NEEDS_ENROLMENT,
            # An SVG data URI: no script and no extra request, allowed by the CSP's img-src data:.
            "qr_code": segno.make(device.config_url, error="m").svg_data_uri(scale=5),
            "secret": " ".join(key[i : i + 4] for i in range(0, len(key), 4)),
        }
    )
    return TemplateResponse(request, "admin/otp_enrol.html", context)
