"""A fake of PayPal's OAuth2 token and Payouts endpoints. `PayPal-Request-Id` replays the first
answer; a reused `sender_batch_id` under another request id is refused like PayPal does.
`settle_at_once` (the demo) answers a new batch already paid, its items in the answer, as PayPal
does for a batch it settles synchronously; otherwise a batch stays PENDING until `settle()`."""
import base64
import itertools
import json

from .server import FakeServer


class FakePayPal(FakeServer):
    def __init__(self, *, client_id: str = "fake-client", client_secret: str = "fake-secret",  # noqa: S107 - a fake credential
                 settle_at_once: bool = False, base_url: str = ""):
        super().__init__(base_url=base_url)
        self.settle_at_once = settle_at_once
        self.credentials = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self.tokens: set[str] = set()
        self.tokens_issued = 0
        self.batches: dict[str, dict] = {}
        self.by_sender_batch: dict[str, str] = {}
        self.by_request_id: dict[str, tuple[int, dict]] = {}
        self._ids = itertools.count(1)

    def settle(self, batch_id: str, status: str = "SUCCESS"):
        with self.lock:
            batch = self.batches[batch_id]
            batch["batch_header"]["batch_status"] = "SUCCESS" if status == "SUCCESS" else "PROCESSING"
            batch["items"][0]["transaction_status"] = status

    def expire_tokens(self):
        with self.lock:
            self.tokens.clear()

    def route(self, method, path, query, headers, body):
        if path == "/v1/oauth2/token" and method == "POST":
            if headers.get("authorization") != f"Basic {self.credentials}":
                return 401, {"error": "invalid_client", "error_description": "Client Authentication failed"}
            self.tokens_issued += 1
            token = f"A21-fake-{self.tokens_issued}"
            self.tokens.add(token)
            return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 32400}
        token = headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.tokens:
            return 401, {"name": "AUTHENTICATION_FAILURE", "message": "Authentication failed due to invalid "
                                                                      "authentication credentials or a missing "
                                                                      "Authorization header."}
        if path == "/v1/payments/payouts" and method == "POST":
            request_id = headers.get("paypal-request-id")
            if request_id and request_id in self.by_request_id:
                return self.by_request_id[request_id]
            answer = self._create(json.loads(body))
            if request_id:
                self.by_request_id[request_id] = answer
            return answer
        if path.startswith("/v1/payments/payouts/") and method == "GET":
            batch = self.batches.get(path.rsplit("/", 1)[1])
            if batch is None:
                return 404, {"name": "RESOURCE_NOT_FOUND", "message": "The requested resource was not found"}
            return 200, batch
        return 404, {"name": "NOT_FOUND", "message": f"no route {method} {path}"}

    def _create(self, body: dict) -> tuple[int, dict]:
        sender_batch_id = body["sender_batch_header"]["sender_batch_id"]
        if sender_batch_id in self.by_sender_batch:
            return 400, {"name": "USER_BUSINESS_ERROR", "message": f"Batch with given sender_batch_id "
                                                                   f"{sender_batch_id} already exists"}
        item = body["items"][0]
        if "@" not in item["receiver"]:
            return 422, {"name": "UNPROCESSABLE_ENTITY", "message": "Receiver is invalid or does not match "
                                                                    "with type"}
        batch_id = f"PB{next(self._ids):08d}"
        self.by_sender_batch[sender_batch_id] = batch_id
        self.batches[batch_id] = {
            "batch_header": {"payout_batch_id": batch_id, "batch_status": "PENDING",
                             "sender_batch_header": body["sender_batch_header"], "amount": item["amount"]},
            "items": [{"payout_item_id": f"IT{batch_id}", "transaction_status": "PENDING",
                       "payout_item": item}],
        }
        if self.settle_at_once:
            self.settle(batch_id)
            return 201, self.batches[batch_id]
        return 201, {"batch_header": {"payout_batch_id": batch_id, "batch_status": "PENDING",
                                      "sender_batch_header": body["sender_batch_header"]}}
