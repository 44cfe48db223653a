"""A fake of the Wise quote, transfer, funding and status endpoints. A repeated
`customerTransactionId` returns the transfer already created, as Wise does. A funded transfer is
`processing` until `set_status()`; with `settle_at_once` (the demo) funding sends it at once."""
import itertools
import json
import uuid

from .server import FakeServer


class FakeWise(FakeServer):
    def __init__(self, *, token: str = "fake-wise-token", settle_at_once: bool = False, base_url: str = ""):  # noqa: S107
        super().__init__(base_url=base_url)
        self.token = token
        self.settle_at_once = settle_at_once
        self.recipients: set[str] = set()  # or any container: `recipient in self.recipients`
        self.quotes: dict[str, dict] = {}
        self.transfers: dict[str, dict] = {}
        self.by_customer_id: dict[str, str] = {}
        self._ids = itertools.count(50_000_001)

    def set_status(self, transfer_id: str, status: str):
        with self.lock:
            self.transfers[transfer_id]["status"] = status

    def route(self, method, path, query, headers, body):
        if headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"error": "unauthorized", "error_description": "Invalid token"}
        parts = path.strip("/").split("/")
        data = json.loads(body) if body else {}
        if method == "POST" and len(parts) == 4 and parts[0] == "v3" and parts[3] == "quotes":
            quote = {"id": str(uuid.uuid4()), "sourceCurrency": data["sourceCurrency"],
                     "targetCurrency": data["targetCurrency"], "sourceAmount": data["sourceAmount"]}
            self.quotes[quote["id"]] = quote
            return 200, quote
        if method == "POST" and parts == ["v1", "transfers"]:
            existing = self.by_customer_id.get(data.get("customerTransactionId", ""))
            if existing:
                return 200, self.transfers[existing]
            if str(data.get("targetAccount")) not in self.recipients:
                return 422, {"errors": [{"code": "NOT_VALID", "message": "Recipient account not found"}],
                             "message": "Recipient account not found"}
            quote = self.quotes.get(data.get("quoteUuid"))
            if quote is None:
                return 422, {"message": "Quote not found"}
            transfer = {"id": next(self._ids), "status": "incoming_payment_waiting",
                        "targetAccount": data["targetAccount"], "sourceValue": quote["sourceAmount"],
                        "sourceCurrency": quote["sourceCurrency"],
                        "customerTransactionId": data["customerTransactionId"]}
            self.transfers[str(transfer["id"])] = transfer
            self.by_customer_id[data["customerTransactionId"]] = str(transfer["id"])
            return 200, transfer
        if method == "POST" and len(parts) == 6 and parts[3] == "transfers" and parts[5] == "payments":
            transfer = self.transfers.get(parts[4])
            if transfer is None:
                return 404, {"message": "transfer not found"}
            if transfer["status"] != "incoming_payment_waiting":
                return 409, {"message": "transfer already funded"}
            transfer["status"] = "outgoing_payment_sent" if self.settle_at_once else "processing"
            return 201, {"type": "BALANCE", "status": "COMPLETED", "errorCode": None}
        if method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "transfers"]:
            transfer = self.transfers.get(parts[2])
            return (200, transfer) if transfer else (404, {"message": "transfer not found"})
        return 404, {"message": f"no route {method} {path}"}
