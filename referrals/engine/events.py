"""Validation of incoming events: field by field, with errors that name the field.

This is the single place that knows the event contract of API.md; the API, the portal's
sign-up and the tests all go through `validate_event`.
"""
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from ledger.money import AmountError, parse_amount
from referrals_site.text import json_text_problem

ACCOUNT_CREATED = "account.created"
CREDITS_PURCHASED = "credits.purchased"
PLAN_PURCHASED = "plan.purchased"
USAGE_CHARGED = "usage.charged"
CREDITS_REDEEMED = "credits.redeemed"
PAYMENT_REFUNDED = "payment.refunded"
TEMPLATE_PUBLISHED = "template.published"

EXTERNAL_TYPES = (
    ACCOUNT_CREATED, CREDITS_PURCHASED, PLAN_PURCHASED, USAGE_CHARGED,
    CREDITS_REDEEMED, PAYMENT_REFUNDED, TEMPLATE_PUBLISHED,
)
PURCHASE_TYPES = (CREDITS_PURCHASED, PLAN_PURCHASED)
REFUNDABLE_TYPES = (CREDITS_PURCHASED, PLAN_PURCHASED, USAGE_CHARGED)
AMOUNT_TYPES = (CREDITS_PURCHASED, PLAN_PURCHASED, USAGE_CHARGED, CREDITS_REDEEMED, PAYMENT_REFUNDED)

# Allowed fields per type, beyond the common ones; True marks a required field.
TYPE_FIELDS: dict[str, dict[str, bool]] = {
    ACCOUNT_CREATED: {"email": True, "referral_code": False, "click_id": False, "ip": False,
                      "device_id": False, "template": False},
    CREDITS_PURCHASED: {"amount": True, "payment_fingerprint": False},
    PLAN_PURCHASED: {"amount": True, "plan": True},
    USAGE_CHARGED: {"amount": True, "product": True, "template": False, "runtime_seconds": False},
    CREDITS_REDEEMED: {"amount": True},
    PAYMENT_REFUNDED: {"amount": True, "refunds": True},
    TEMPLATE_PUBLISHED: {"template": True, "name": False},
}
COMMON_FIELDS = ("id", "type", "occurred_at", "account")
EARLIEST_YEAR = 2000
TEMPLATE_ID = re.compile(r"[A-Za-z0-9._-]+")


@dataclass
class ValidEvent:
    external_id: str
    type: str
    account: str
    occurred_at: datetime
    content_hash: str
    raw: dict
    amount: int | None = None
    product: str = ""
    template: str = ""
    runtime_seconds: int = 0
    refunds: str = ""
    extra: dict = field(default_factory=dict)
    # The canonical JSON text the hash is taken of: stored as the payload by batch ingestion
    # (the database keeps JSON parsed, so key order and spacing do not matter there).
    canonical_json: str = ""
    # Fields accepted but ignored, each {"field", "code", "message"} (a malformed referral code
    # of a sign-up: the account is created unattributed rather than lost).
    warnings: list = field(default_factory=list)


class EventInvalid(Exception):
    def __init__(self, fields: dict[str, str], code: str = "invalid"):
        self.fields = fields
        self.code = code
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))


def canonical_json(raw: dict) -> str:
    return json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content_hash(raw: dict, *, canonical: str | None = None) -> str:
    return hashlib.sha256((canonical or canonical_json(raw)).encode()).hexdigest()


def _text(raw, name, errors, *, required=True, max_length=200):
    value = raw.get(name)
    if value is None or value == "":
        if required:
            errors[name] = "this field is required"
        return ""
    if not isinstance(value, str):
        errors[name] = "must be a string"
        return ""
    value = value.strip()
    if not value:
        errors[name] = "must not be blank"
    elif len(value) > max_length:
        errors[name] = f"must be at most {max_length} characters"
    return value


def normalize_email(email: str) -> str:
    """Lower-case; for Gmail-style providers also drop dots and any +tag in the local part."""
    local, _, domain = email.strip().lower().rpartition("@")
    if not local:
        return email.strip().lower()
    local = local.split("+", 1)[0]
    if domain in ("gmail.com", "googlemail.com"):
        local = local.replace(".", "")
        domain = "gmail.com"
    return f"{local}@{domain}"


def validate_event(raw, *, now: datetime | None = None) -> ValidEvent:
    """Check one event against the contract; raise EventInvalid naming every bad field."""
    if not isinstance(raw, dict):
        raise EventInvalid({"event": "must be a JSON object"})
    if problem := json_text_problem(raw):  # NUL, lone surrogates, control characters (issue 15)
        raise EventInvalid(dict([problem]))
    errors: dict[str, str] = {}
    external_id = _text(raw, "id", errors)
    event_type = _text(raw, "type", errors, max_length=40)
    if event_type and event_type not in EXTERNAL_TYPES:
        errors["type"] = f"unknown event type {event_type!r}; expected one of {', '.join(EXTERNAL_TYPES)}"
        raise EventInvalid(errors, code="unknown_type")
    account = _text(raw, "account", errors, max_length=120)

    occurred_at = None
    value = raw.get("occurred_at")
    if isinstance(value, str):
        try:
            occurred_at = parse_datetime(value)
        except ValueError:  # well-formed but impossible, e.g. February 30th
            occurred_at = None
    if not value:
        errors["occurred_at"] = "this field is required"
    elif occurred_at is None:
        errors["occurred_at"] = "must be an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z"
    elif occurred_at.tzinfo is None:
        errors["occurred_at"] = "must include a time zone (e.g. Z or +00:00)"
        occurred_at = None
    elif occurred_at.year < EARLIEST_YEAR or occurred_at.year > 9000:
        errors["occurred_at"] = f"is out of range (before {EARLIEST_YEAR} or absurdly late)"
        occurred_at = None
    else:
        skew = timedelta(seconds=settings.REFERRAL["MAX_CLOCK_SKEW_SECONDS"])
        if occurred_at > (now or timezone.now()) + skew:
            errors["occurred_at"] = "is in the future"

    if not event_type:
        raise EventInvalid(errors)

    spec = TYPE_FIELDS[event_type]
    for name in raw:
        if name not in COMMON_FIELDS and name not in spec:
            errors[name] = f"is not a field of {event_type} events"

    canonical = canonical_json(raw)
    event = ValidEvent(external_id=external_id, type=event_type, account=account, occurred_at=occurred_at,
                       content_hash=content_hash(raw, canonical=canonical), raw=raw, canonical_json=canonical)
    if "amount" in spec:
        if raw.get("amount") in (None, ""):
            errors["amount"] = "this field is required"
        elif not isinstance(raw["amount"], str):  # API.md: a decimal string, never a JSON number
            errors["amount"] = 'must be a decimal string, e.g. "12.34"'
        else:
            try:
                event.amount = parse_amount(raw["amount"])
            except AmountError as exc:
                errors["amount"] = str(exc)
    if "product" in spec:
        event.product = _text(raw, "product", errors, max_length=60).lower()
    if "template" in spec:
        event.template = _text(raw, "template", errors, required=spec["template"], max_length=120)
        if event.template and not TEMPLATE_ID.fullmatch(event.template):
            errors["template"] = "may contain only letters, digits, '.', '_' and '-' (it appears in links)"
    if "refunds" in spec:
        event.refunds = _text(raw, "refunds", errors)
    if "runtime_seconds" in spec and raw.get("runtime_seconds") is not None:
        seconds = raw["runtime_seconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
            errors["runtime_seconds"] = "must be a whole number of seconds, zero or more"
        elif seconds > 10 * 365 * 24 * 3600:
            errors["runtime_seconds"] = "is implausibly large (more than ten years)"
        else:
            event.runtime_seconds = seconds
    for name in ("plan", "payment_fingerprint", "name", "referral_code", "click_id", "device_id"):
        if name in spec:
            value = _text(raw, name, errors, required=spec[name])
            if value:
                event.extra[name] = value
    if event_type == ACCOUNT_CREATED:
        email = _text(raw, "email", errors, max_length=254)
        if email and ("@" not in email or email.startswith("@") or email.endswith("@") or " " in email):
            errors["email"] = "is not a valid e-mail address"
        event.extra["email"] = email
        if code := event.extra.get("referral_code"):
            event.extra["referral_code"] = code.lower()
        for name, code in (("referral_code", "malformed_code"), ("click_id", "malformed_click")):
            if name in errors:
                event.warnings.append({"field": name, "code": code,
                                       "message": f"{errors.pop(name)}; it is ignored and the account is not "
                                                  "attributed through it"})
                event.extra.pop(name, None)
        ip = raw.get("ip")
        if ip not in (None, ""):
            try:
                event.extra["ip"] = str(ipaddress.ip_address(str(ip).strip()))
            except ValueError:
                errors["ip"] = "is not a valid IP address"
    if errors:
        raise EventInvalid(errors)
    return event
