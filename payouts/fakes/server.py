"""The base of every fake provider: its state and `route`, served either by a small threaded
HTTP server of its own with scriptable faults (the tests) or through a Django view on the dev
server (`make run`'s demo, payouts/fakes/demo.py). One implementation for both."""
import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


class FakeServer:
    """Subclasses implement `route(method, path, query, headers, body) -> (status, dict)`; a 3xx
    status redirects a browser to `payload["location"]` (a hosted page such as Stripe's onboarding).

    Faults apply to the next request whose path starts with a prefix:
    - `fail_next(status, body)`: answer with that status instead;
    - `drop_next()`: do the work, then close the connection without answering — a crash
      between the provider's commit and ours, as the client sees it;
    - `delay_next(seconds)`: do the work after a pause (longer than the client's timeout).
    """

    def __init__(self, *, base_url: str = ""):
        self.lock = threading.RLock()
        self.faults: list[tuple[str, str, tuple]] = []
        self.requests: list[dict] = []
        self.httpd: ThreadingHTTPServer | None = None
        self.base_url = base_url  # where it is mounted when it has no server of its own

    @property
    def url(self) -> str:
        if self.httpd is None:
            return self.base_url
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0):
        """Serve on 127.0.0.1 (a free port unless one is given) in a daemon thread."""
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, method: str, path: str, query: dict, headers: dict, body: bytes) -> tuple[int, dict]:
        """One request as the provider answers it, without a transport (the dev server's mount)."""
        with self.lock:
            self.requests.append({"method": method, "path": path, "headers": headers, "body": body})
            return self.route(method, path, query, headers, body)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with fake.lock:
                    fake.requests.append({"method": self.command, "path": parts.path, "headers": headers,
                                          "body": body})
                    fault = fake._take_fault(parts.path)
                if fault and fault[0] == "status":
                    return self._answer(*fault[1])
                if fault and fault[0] == "delay":
                    time.sleep(fault[1][0])
                with fake.lock:
                    status, payload = fake.route(self.command, parts.path, dict(parse_qsl(parts.query)), headers,
                                                 body)
                if fault and fault[0] == "drop":
                    self.close_connection = True
                    return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                    self._answer(status, payload)

            def _answer(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", payload["location"])
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

        return Handler

    def _take_fault(self, path: str):
        for index, (prefix, kind, args) in enumerate(self.faults):
            if path.startswith(prefix):
                del self.faults[index]
                return kind, args
        return None

    def fail_next(self, status: int, body: dict, *, path: str = "/"):
        with self.lock:
            self.faults.append((path, "status", (status, body)))

    def drop_next(self, *, path: str = "/"):
        with self.lock:
            self.faults.append((path, "drop", ()))

    def delay_next(self, seconds: float, *, path: str = "/"):
        with self.lock:
            self.faults.append((path, "delay", (seconds,)))

    def route(self, method, path, query, headers, body):  # pragma: no cover - overridden
        raise NotImplementedError
