"""Reads the API needs beyond `referrals.selectors`, scoped to what the calling key may see."""
from django.db.models import QuerySet, Sum
from rest_framework.exceptions import NotFound

from .. import selectors
from ..models import Account, Accrual, ApiKey, Application, Program, Referral, Template


def account_for_key(key: ApiKey, external_id: str) -> Account:
    """The account, or 404 — also for a partner key asking about any account but its own,
    so a partner cannot learn which account ids exist."""
    accounts = Account.objects.filter(external_id=external_id)
    if key.account_id is not None:
        accounts = accounts.filter(pk=key.account_id)
    account = accounts.first()
    if account is None:
        raise NotFound(f"no account {external_id!r}")
    return account


def template_for_key(key: ApiKey, external_id: str) -> Template:
    templates = Template.objects.select_related("creator").filter(external_id=external_id)
    if key.account_id is not None:
        templates = templates.filter(creator_id=key.account_id)
    template = templates.first()
    if template is None:
        raise NotFound(f"no template {external_id!r}")
    return template


def account_summary(account: Account) -> dict:
    referred_by = Referral.objects.filter(referred=account).values_list("referrer__referral_code", flat=True).first()
    return {
        "account": account.external_id,
        "referral_code": account.referral_code,
        "referral_link": account.referral_link,
        "referred_by": referred_by,
        "track": account.track,
        "balances": selectors.account_balances(account),
    }


def referrals_of(account: Account, *, status: str | None = None) -> QuerySet[Referral]:
    referrals = Referral.objects.filter(referrer=account).select_related("referred")
    return referrals.filter(status=status) if status else referrals


def template_summary(template: Template) -> dict:
    earned = Accrual.objects.filter(template=template, program__kind=Program.Kind.TEMPLATE_SHARE).exclude(
        state=Accrual.State.VOID).aggregate(amount=Sum("amount"), reversed=Sum("reversed"))
    return {
        "template": template.external_id,
        "name": template.name,
        "creator": template.creator.external_id,
        "runtime_seconds": template.runtime_seconds,
        "qualified": template.qualified_at is not None,
        "earned": int(earned["amount"] or 0) - int(earned["reversed"] or 0),
    }


def applications(*, status: str | None = None) -> QuerySet[Application]:
    found = Application.objects.select_related("program", "account")
    return found.filter(status=status) if status else found
