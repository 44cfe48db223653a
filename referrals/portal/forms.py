"""Portal forms: sign-up, an e-mail login (the username is the e-mail address), the referral
filter and the Partner upgrade confirmation."""
from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

User = get_user_model()


class SignupForm(forms.Form):
    email = forms.EmailField(
        label="E-mail", max_length=150,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}),
    )
    password1 = forms.CharField(
        label="Password", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html(),
    )
    password2 = forms.CharField(
        label="Confirm password", strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean_email(self) -> str:
        # Usernames are case-sensitive in Django; e-mail addresses are not, in practice.
        email = self.cleaned_data["email"].strip().lower()
        if User.objects.filter(username__iexact=email).exists():
            raise ValidationError("An account with this e-mail already exists. Log in instead.")
        return email

    def clean(self):
        cleaned = super().clean()
        password1, password2 = cleaned.get("password1"), cleaned.get("password2")
        if password1 and password2 and password1 != password2:
            self.add_error("password2", "The two passwords do not match.")
        elif password1:
            email = cleaned.get("email", "")
            try:
                password_validation.validate_password(password1, user=User(username=email, email=email))
            except ValidationError as exc:
                self.add_error("password1", exc)
        return cleaned


class EmailAuthenticationForm(AuthenticationForm):
    username = forms.EmailField(label="E-mail", widget=forms.EmailInput(attrs={"autocomplete": "email",
                                                                              "autofocus": True}))
    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "Please enter a correct e-mail and password. Both fields may be case-sensitive.",
    }

    def clean_username(self) -> str:
        return self.cleaned_data["username"].strip().lower()


class ReferralFilterForm(forms.Form):
    q = forms.CharField(label="Search", required=False, max_length=100,
                        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Account id or e-mail"}))
    status = forms.ChoiceField(label="Status", required=False)

    def __init__(self, *args, **kwargs):
        from ..models import Referral

        super().__init__(*args, **kwargs)
        self.fields["status"].choices = [("", "All statuses"), *Referral.Status.choices]


class PartnerUpgradeForm(forms.Form):
    confirm = forms.BooleanField(
        label="I want to move to the Partner track. Purchases by my referrals from now on earn the Partner rate.",
        error_messages={"required": "Tick the box to confirm the upgrade."},
    )


class AccountPasswordResetForm(PasswordResetForm):
    """Password reset that also reaches accounts created by an event (no portal login yet): the
    reset link is how such an account sets its first password. Django's form only mails users
    with a usable password; here a login without one is created and linked to the account."""

    email = forms.EmailField(label="E-mail", max_length=254,
                             widget=forms.EmailInput(attrs={"autocomplete": "email"}))

    def get_users(self, email):
        email = email.strip().lower()
        _login_for_event_account(email)
        users = User._default_manager.filter(username__iexact=email, is_active=True)
        for user in users:
            if user.has_usable_password() or hasattr(user, "referral_account"):
                yield user


def _login_for_event_account(email: str) -> None:
    from ..models import Account, AuditLog

    if User.objects.filter(username__iexact=email).exists():
        return
    accounts = list(Account.objects.filter(email__iexact=email, user__isnull=True)[:2])
    if len(accounts) != 1:
        return  # none, or ambiguous: staff link those by hand
    try:
        with transaction.atomic():
            account = Account.objects.select_for_update().get(pk=accounts[0].pk, user__isnull=True)
            user = User.objects.create_user(username=email, email=email)  # no password until the reset
            account.user = user
            account.save(update_fields=["user"])
            AuditLog.objects.create(actor=None, action="account.login_created", object_type="account",
                                    object_id=str(account.pk), reason="password reset requested")
    except (Account.DoesNotExist, IntegrityError):
        pass  # linked or created concurrently by another request: nothing to do
