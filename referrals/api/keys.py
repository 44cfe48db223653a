"""Integration API keys: creating, checking and revoking them. Only a SHA-256 of a key is stored.

A key reads `rk_<prefix>_<secret>`: the prefix finds the row, the hash of the whole key
proves it. The plaintext exists once, in the return value of `api_key_create`.
"""
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from ..models import CODE_ALPHABET, Account, ApiKey, AuditLog

KEY_PREFIX = "rk"
PREFIX_LENGTH = 8
# Writing last_used_at on every request would turn each read into a write; a minute is plenty.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Scopes a partner's own key (bound to one account) may carry: it must not push events or
# act as staff for everybody.
ACCOUNT_KEY_SCOPES = frozenset({ApiKey.Scope.READ.value})


class ApiKeyInvalid(ValueError):
    """Bad arguments for a new key; `fields` names each bad argument."""

    def __init__(self, fields: dict[str, str]):
        self.fields = fields
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def split_key(plaintext: str) -> str | None:
    """The prefix of a well-formed key, or None."""
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != PREFIX_LENGTH or not parts[2]:
        return None
    return parts[1]


def clean_scopes(scopes) -> list[str]:
    if isinstance(scopes, str):
        scopes = [s.strip() for s in scopes.split(",") if s.strip()]
    if not isinstance(scopes, list | tuple | set | frozenset):
        raise ApiKeyInvalid({"scopes": "must be a list of scopes"})
    cleaned: list[str] = []
    for scope in scopes:
        if not isinstance(scope, str) or scope not in ApiKey.Scope.values:
            raise ApiKeyInvalid({"scopes": f"unknown scope {scope!r}; choose from {', '.join(ApiKey.Scope.values)}"})
        if scope not in cleaned:
            cleaned.append(scope)
    if not cleaned:
        raise ApiKeyInvalid({"scopes": "at least one scope is required"})
    return cleaned


def validate_api_key_request(*, name: str, scopes, account: Account | None = None,
                             expires_at: datetime | None = None) -> list[str]:
    """Check a key request; returns the cleaned scopes or raises ApiKeyInvalid naming each field."""
    errors: dict[str, str] = {}
    name = (name or "").strip()
    if not name:
        errors["name"] = "is required"
    elif len(name) > ApiKey._meta.get_field("name").max_length:
        errors["name"] = "is too long"
    try:
        scopes = clean_scopes(scopes)
    except ApiKeyInvalid as exc:
        errors.update(exc.fields)
    else:
        if account is not None and not set(scopes) <= ACCOUNT_KEY_SCOPES:
            errors["scopes"] = "a key bound to an account may only have the 'read' scope"
    if expires_at is not None and (expires_at.tzinfo is None or expires_at <= timezone.now()):
        errors["expires_at"] = "must be a time zone aware date-time in the future"
    if errors:
        raise ApiKeyInvalid(errors)
    return scopes


def api_key_create(
    *, name: str, scopes, account: Account | None = None, expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key and return it with its plaintext, which is not stored anywhere."""
    scopes = validate_api_key_request(name=name, scopes=scopes, account=account, expires_at=expires_at)
    name = name.strip()

    for _ in range(5):
        prefix = "".join(secrets.choice(CODE_ALPHABET) for _ in range(PREFIX_LENGTH))
        plaintext = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(name=name, prefix=prefix, hashed_key=hash_key(plaintext),
                                            scopes=scopes, account=account, expires_at=expires_at)
                AuditLog.objects.create(
                    actor=None, action="api_key.create", object_type="ApiKey", object_id=str(key.pk),
                    data={"name": name, "scopes": scopes, "account": account.external_id if account else None})
        except IntegrityError:
            continue  # a prefix collision (1 in 36^8): draw again
        return key, plaintext
    raise RuntimeError("could not draw a unique API key prefix")


def api_key_find(plaintext: str) -> ApiKey | None:
    """The key this plaintext proves, whatever its state (revoked and expired included)."""
    prefix = split_key(plaintext)
    if prefix is None:
        return None
    key = ApiKey.objects.select_related("account").filter(prefix=prefix).first()
    if key is None or not hmac.compare_digest(key.hashed_key, hash_key(plaintext)):
        return None
    return key


def api_key_touch(*, key: ApiKey, now: datetime | None = None) -> None:
    now = now or timezone.now()
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_RESOLUTION:
        return
    # Conditional, so concurrent requests with one key write at most once per minute.
    ApiKey.objects.filter(pk=key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ).update(last_used_at=now)
    key.last_used_at = now


@transaction.atomic
def api_key_revoke(*, key: ApiKey, actor=None, reason: str = "") -> ApiKey:
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    AuditLog.objects.create(actor=actor, action="api_key.revoke", object_type="ApiKey", object_id=str(key.pk),
                            reason=reason, data={"name": key.name})
    key.refresh_from_db()
    return key


def api_key_audit(*, key: ApiKey, action: str, obj, reason: str = "") -> None:
    """Which key did a staff action: API keys have no user, so the services' audit row has no actor."""
    AuditLog.objects.create(actor=None, action=f"api:{action}", object_type=type(obj).__name__,
                            object_id=str(obj.pk), reason=reason,
                            data={"api_key": key.name, "api_key_prefix": key.prefix})
