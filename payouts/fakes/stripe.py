"""A fake of the Stripe API endpoints the payouts use, honouring `Idempotency-Key` like Stripe:
the same key with the same parameters replays the first answer (no second transfer); the same
key with other parameters is an idempotency error. Its hosted onboarding page
(`/express/onboarding/<account>`, the account link's url) activates the account's transfers and
sends the browser back to the link's `return_url`, as finishing Stripe's onboarding does."""
import hashlib
import hmac
import itertools
import json
import time
from urllib.parse import parse_qsl

from .server import FakeServer


def _nested(form: bytes) -> dict:
    """Stripe's form encoding (`metadata[payout_id]=1`) back into nested dicts."""
    out: dict = {}
    for key, value in parse_qsl(form.decode(), keep_blank_values=True):
        parts = key.replace("]", "").split("[")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _error(status: int, message: str, *, type_: str = "invalid_request_error", code: str = "") -> tuple[int, dict]:
    return status, {"error": {"type": type_, "message": message, "code": code}}


class FakeStripe(FakeServer):
    def __init__(self, *, secret_key: str = "sk_test_fake", base_url: str = ""):  # noqa: S107 - a fake key
        super().__init__(base_url=base_url)
        self.secret_key = secret_key
        self.accounts: dict[str, dict] = {}
        self.return_urls: dict[str, str] = {}  # account -> its latest account link's return_url
        self.transfers: dict[str, dict] = {}
        self.idempotent: dict[str, tuple[str, int, dict]] = {}
        self._ids = itertools.count(1)

    # ---------------------------------------------------------------- test helpers

    def add_account(self, account_id: str | None = None, *, transfers: str = "active") -> str:
        account_id = account_id or f"acct_fake{next(self._ids):06d}"
        with self.lock:
            self.accounts[account_id] = {"id": account_id, "object": "account", "type": "express",
                                         "capabilities": {"transfers": transfers},
                                         "payouts_enabled": transfers == "active", "metadata": {}}
        return account_id

    def activate(self, account_id: str):
        with self.lock:
            self.accounts[account_id]["capabilities"]["transfers"] = "active"
            self.accounts[account_id]["payouts_enabled"] = True

    def reverse(self, transfer_id: str):
        with self.lock:
            self.transfers[transfer_id]["reversed"] = True
            self.transfers[transfer_id]["amount_reversed"] = self.transfers[transfer_id]["amount"]

    # ---------------------------------------------------------------- the API

    def route(self, method, path, query, headers, body):
        if method == "GET" and path.startswith("/express/onboarding/"):
            return self._onboarding_page(path.rsplit("/", 1)[1])
        if headers.get("authorization") != f"Bearer {self.secret_key}":
            return _error(401, "Invalid API Key provided")
        params = _nested(body) if method == "POST" else _nested(
            "&".join(f"{k}={v}" for k, v in query.items()).encode())
        key = headers.get("idempotency-key")
        if method == "POST" and key:
            fingerprint = hashlib.sha256(f"{path}?{json.dumps(params, sort_keys=True)}".encode()).hexdigest()
            if key in self.idempotent:
                stored_fingerprint, status, payload = self.idempotent[key]
                if stored_fingerprint != fingerprint:
                    return _error(400, "Keys for idempotent requests can only be used with the same parameters",
                                  type_="idempotency_error")
                return status, payload
            status, payload = self._route(method, path, params)
            self.idempotent[key] = (fingerprint, status, payload)
            return status, payload
        return self._route(method, path, params)

    def _route(self, method, path, params):
        parts = path.strip("/").split("/")
        if parts[:2] == ["v1", "transfers"]:
            if method == "POST" and len(parts) == 2:
                return self._create_transfer(params)
            if method == "GET" and len(parts) == 3:
                found = self.transfers.get(parts[2])
                return (200, found) if found else _error(404, f"No such transfer: '{parts[2]}'",
                                                         code="resource_missing")
            if method == "GET" and len(parts) == 2:
                found = [t for t in self.transfers.values()
                         if params.get("transfer_group") in (None, t.get("transfer_group"))
                         and t["created"] > int(params.get("created", {}).get("gt", -1))]
                return 200, {"object": "list", "url": "/v1/transfers", "has_more": False,
                             "data": sorted(found, key=lambda t: t["id"], reverse=True)}
        if parts[:2] == ["v1", "accounts"]:
            if method == "POST" and len(parts) == 2:
                account_id = self.add_account(transfers="inactive")
                self.accounts[account_id].update(email=params.get("email"), metadata=params.get("metadata", {}))
                return 200, self.accounts[account_id]
            if method == "GET" and len(parts) == 3:
                found = self.accounts.get(parts[2])
                return (200, found) if found else _error(404, f"No such account: '{parts[2]}'",
                                                         code="resource_missing")
        if parts[:2] == ["v1", "account_links"] and method == "POST":
            if params.get("account") not in self.accounts:
                return _error(400, "No such account", code="resource_missing")
            self.return_urls[params["account"]] = params.get("return_url", "")
            return 200, {"object": "account_link", "created": int(time.time()),
                         "expires_at": int(time.time()) + 300,
                         "url": f"{self.url}/express/onboarding/{params['account']}"}
        return _error(404, f"Unrecognized request URL ({method}: {path})")

    def _onboarding_page(self, account_id: str):
        # The browser's visit, not an API call: no key. The details a real user would enter are
        # taken as given; the account can receive transfers afterwards.
        if account_id not in self.accounts or not self.return_urls.get(account_id):
            return 404, {"error": {"message": "This onboarding link has expired or is invalid"}}
        self.activate(account_id)
        return 302, {"location": self.return_urls[account_id]}

    def _create_transfer(self, params):
        destination = params.get("destination")
        if destination not in self.accounts:
            return _error(400, f"No such destination: '{destination}'", code="resource_missing")
        if self.accounts[destination]["capabilities"]["transfers"] != "active":
            return _error(400, "Your destination account needs to have at least one of the following capabilities "
                               "enabled: transfers, crypto_transfers, legacy_payments")
        amount = int(params["amount"])
        if amount <= 0:
            return _error(400, "Invalid positive integer", code="parameter_invalid_integer")
        transfer = {"id": f"tr_fake{next(self._ids):06d}", "object": "transfer", "amount": amount,
                    "amount_reversed": 0, "currency": params["currency"], "destination": destination,
                    "transfer_group": params.get("transfer_group"), "metadata": params.get("metadata", {}),
                    "reversed": False, "created": int(time.time())}
        self.transfers[transfer["id"]] = transfer
        return 200, transfer


def sign(payload: str, secret: str, *, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header as Stripe computes it (v1 = HMAC-SHA256 of "t.payload")."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={signature}"


def event(event_id: str, type_: str, obj: dict, *, created: int, account: str | None = None) -> str:
    body = {"id": event_id, "object": "event", "type": type_, "created": created, "api_version": "2025-01-27",
            "livemode": False, "data": {"object": obj}}
    if account:
        body["account"] = account
    return json.dumps(body)
