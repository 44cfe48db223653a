"""The referral click's fast path (issue 9): which account a `?ref=` code belongs to, from three cache
layers, and the click's row written in batches after the visitor has been answered.

Reads: a per-process dict, then the Django cache (Redis when REDIS_URL is set), then the database.
An entry carries the time it was read from the database and is trusted for CLICK_CODE_CACHE_SECONDS
from then, in every layer, so a code that changes or is disabled stops resolving to its old account
at most that long after (at once in the process that made the change: `forget_codes`).

Writes: the click gets its public id, unique flag and time in the request, then waits in a
per-process buffer that a background thread writes with one INSERT every CLICK_FLUSH_INTERVAL_MS
(or as soon as CLICK_FLUSH_BATCH are waiting). The buffer is written at process exit too (atexit:
gunicorn workers exit through it on SIGTERM, SIGINT and SIGQUIT), and a sign-up that names a click
still waiting writes that click first (`find_clicks`: a run of sign-ups writes all of theirs in one
INSERT). A batch the database cannot take (it is down, the table is locked) stays buffered and is
retried; a batch it refuses because of one row's content is written row by row and only that row
is dropped, so one hostile click never holds back the others (issue 15.2). Only SIGKILL or a crash
loses what is buffered at that moment (< one interval).
"""

import atexit
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, DataError, IntegrityError, connection, connections, transaction
from django.utils import timezone

from referrals_site.text import safe_text

from ..models import Account, Click, Template

log = logging.getLogger(__name__)

CODE_PREFIX = "ref-code:"
TEMPLATE_PREFIX = "ref-template:"
SEEN_PREFIX = "ref-seen:"
# Unknown codes are cached too (a flood of made-up codes must not reach the database), so the
# per-process dict is bounded: past this many entries it starts afresh.
LOCAL_ENTRIES_MAX = 50_000

_local: dict[str, tuple[float, int | None]] = {}


# --------------------------------------------------------------------------- lookups


def referrer_for_code(code: str) -> int | None:
    """The id of the account whose enabled referral code this is, or None."""
    return _cached(
        CODE_PREFIX + code,
        lambda: Account.objects.filter(referral_code=code, code_enabled=True).values_list("pk", flat=True).first(),
    )


def template_for(external_id: str) -> int | None:
    """The id of the template with this external id, or None."""
    return _cached(
        TEMPLATE_PREFIX + external_id,
        lambda: Template.objects.filter(external_id=external_id).values_list("pk", flat=True).first(),
    )


def forget_codes(*codes: str) -> None:
    """Drop cached lookups of these codes once the current transaction commits.

    After the commit, not before: a request reading the database between our delete and our commit
    would put the old answer back into the shared cache. Other processes' dicts keep theirs until it
    expires (CLICK_CODE_CACHE_SECONDS after it was read from the database).
    """

    def forget():
        for code in codes:
            _local.pop(CODE_PREFIX + code, None)
            _cache_call(cache.delete, CODE_PREFIX + code, default=None)

    transaction.on_commit(forget)


def clear_local_cache() -> None:
    """Forget this process's dict of lookups (tests; the shared cache is cleared with `cache.clear()`)."""
    _local.clear()


def _cached(key: str, load) -> int | None:
    now = time.time()
    entry = _local.get(key)
    if entry is None or entry[0] <= now:
        entry = _cache_call(cache.get, key, default=None)
        if entry is None or entry[0] <= now:
            ttl = settings.REFERRAL["CLICK_CODE_CACHE_SECONDS"]
            entry = (now + ttl, load())
            _cache_call(cache.set, key, entry, timeout=ttl, default=None)
        if len(_local) >= LOCAL_ENTRIES_MAX:
            _local.clear()
        _local[key] = entry
    return entry[1]


def _cache_call(method, *args, default, **kwargs):
    # A cache outage (Redis down) costs the click path its shortcuts, never the visitor's page.
    try:
        return method(*args, **kwargs)
    except Exception:  # the Redis client raises its own exception classes
        log.warning("cache unavailable for %s", method.__name__, exc_info=True)
        return default


# --------------------------------------------------------------------------- the click itself


# The row's columns, in the order `write_clicks` lists the values (PendingClick's fields).
COLUMNS = (
    "public_id",
    "referrer_id",
    "visitor_id",
    "ip_hash",
    "user_agent",
    "path",
    "template_id",
    "is_unique",
    "created_at",
)


@dataclass(frozen=True, slots=True)
class PendingClick:
    """A click as the request knows it: everything of its row but the row's primary key."""

    public_id: uuid.UUID
    referrer_id: int
    visitor_id: str
    ip_hash: str
    user_agent: str
    path: str
    template_id: int | None
    is_unique: bool
    created_at: datetime

    def as_model(self) -> Click:
        return Click(**asdict(self))


assert tuple(f.name for f in fields(PendingClick)) == COLUMNS, "write_clicks lists the values in this order"


def record_click(
    *, referrer_id: int, visitor_id: str, ip_hash: str, user_agent: str, path: str, template_id: int | None
) -> PendingClick:
    click = PendingClick(
        public_id=uuid.uuid4(),
        referrer_id=referrer_id,
        visitor_id=visitor_id,
        ip_hash=ip_hash,
        # Recorded as they came, minus what no database column or page can hold (NUL, surrogates).
        user_agent=safe_text(user_agent[:300]),
        path=safe_text(path[:300]),
        template_id=template_id,
        is_unique=first_in_window(referrer_id=referrer_id, visitor_id=visitor_id),
        created_at=timezone.now(),
    )
    if settings.REFERRAL["CLICK_WRITE"] == "direct":
        write_clicks([click])
    else:
        buffer.add(click)
    return click


def first_in_window(*, referrer_id: int, visitor_id: str) -> bool:
    """True for the visitor's first click on this referrer's links in CLICK_UNIQUE_WINDOW seconds.

    One atomic `add` in the shared cache, no database read: of two concurrent clicks exactly one
    creates the key. The key lives for the window from the unique click, so a visitor counts as
    unique at most once per window. Without the cache we cannot tell, and count the click unique.
    """
    key = f"{SEEN_PREFIX}{referrer_id}:{visitor_id}"
    return bool(_cache_call(cache.add, key, 1, timeout=settings.REFERRAL["CLICK_UNIQUE_WINDOW"], default=True))


def write_clicks(clicks: list[PendingClick]) -> int:
    """Insert these clicks in one transaction; a click whose row exists already is skipped.

    One prepared INSERT run over all rows: `bulk_create` spent six times as much CPU per click
    building model instances, and this runs in the web process, beside the requests.
    """
    db = connections[DEFAULT_DB_ALIAS]  # the thread's connection itself, not the per-access proxy
    meta = Click._meta
    quote = db.ops.quote_name
    columns = [meta.get_field(name) for name in COLUMNS]
    # Only quoted table and column names go into the text; the values are parameters.
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in columns)}) "  # noqa: S608  # nosec B608
        f"VALUES ({', '.join(['%s'] * len(columns))}) ON CONFLICT ({quote('public_id')}) DO NOTHING"
    )
    uuid_field, time_field = meta.get_field("public_id"), meta.get_field("created_at")
    rows = [
        (
            uuid_field.get_db_prep_value(c.public_id, db),
            c.referrer_id,
            c.visitor_id,
            c.ip_hash,
            c.user_agent,
            c.path,
            c.template_id,
            c.is_unique,
            time_field.get_db_prep_value(c.created_at, db),
        )
        for c in clicks
    ]
    with transaction.atomic(), db.cursor() as cursor:
        cursor.executemany(sql, rows)
    return len(clicks)


def find_click(click_id: str) -> Click | None:
    """The click a sign-up names: its row id (digits) or its public id, even if still buffered."""
    return find_clicks([click_id]).get(click_id)


def find_clicks(click_ids: Iterable[str]) -> dict[str, Click]:
    """The clicks sign-ups name, by the id each names (row id or public id; ids that name no
    click are left out), with their referrer, in a number of queries that does not grow with
    the ids: one for the row ids, one for the public ids, and for public ids still in this
    process's click buffer one `bulk_create` and one more read. On PostgreSQL with buffered click
    writes, public ids found nowhere are waited for once, up to one flush interval, all together."""
    row_ids: dict[str, int] = {}
    public_ids: dict[str, uuid.UUID] = {}
    for click_id in set(click_ids):
        if click_id.isascii() and click_id.isdigit() and len(click_id) < 19:
            row_ids[click_id] = int(click_id)
            continue
        with contextlib.suppress(ValueError):  # neither: no click
            public_ids[click_id] = uuid.UUID(click_id)
    found: dict[str, Click] = {}
    if row_ids:
        by_pk = Click.objects.select_related("referrer").in_bulk(set(row_ids.values()))
        found |= {click_id: by_pk[pk] for click_id, pk in row_ids.items() if pk in by_pk}
    if public_ids:
        by_public = _clicks_by_public_id(set(public_ids.values()))
        missing = set(public_ids.values()) - by_public.keys()
        if missing and (pending := buffer.find_all(missing)):
            # Write these now, in the caller's transaction. The buffer keeps them: its batch skips
            # the rows if the caller commits, and writes them if the caller rolls back.
            Click.objects.bulk_create([click.as_model() for click in pending], ignore_conflicts=True)
            by_public |= _clicks_by_public_id(missing)
            missing -= by_public.keys()
        if missing and connection.vendor == "postgresql" and settings.REFERRAL["CLICK_WRITE"] != "direct":
            # Another server process may still hold them; each writes its buffer within one
            # interval, and a new statement sees other transactions' commits (READ COMMITTED).
            # One wait for all of them, not one per click. On SQLite this caller's open write
            # transaction would keep the other process from writing: no waiting.
            deadline = time.monotonic() + settings.REFERRAL["CLICK_FLUSH_INTERVAL_MS"] / 1000 + 0.25
            while missing and time.monotonic() < deadline:
                time.sleep(0.05)
                by_public |= _clicks_by_public_id(missing)
                missing -= by_public.keys()
        found |= {click_id: by_public[public_id] for click_id, public_id in public_ids.items()
                  if public_id in by_public}
    return found


def _clicks_by_public_id(public_ids: set[uuid.UUID]) -> dict[uuid.UUID, Click]:
    rows = Click.objects.filter(public_id__in=public_ids).select_related("referrer")
    return {click.public_id: click for click in rows}


# --------------------------------------------------------------------------- the buffer


# What the database says about a row's content rather than about itself: a foreign key gone
# (IntegrityError), a value it cannot store (DataError: a NUL on PostgreSQL), text the driver
# cannot encode (UnicodeEncodeError, a ValueError: a lone surrogate).
ROW_REFUSED = (IntegrityError, DataError, ValueError)


class ClickBuffer:
    """Clicks waiting to be written, and the thread that writes them (one per process)."""

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._flushing = threading.Lock()  # one writer at a time: the thread, `flush()`, shutdown
        self._pending: list[PendingClick] = []
        self._in_flight: list[PendingClick] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self.dropped = 0

    def add(self, click: PendingClick) -> None:
        with self._lock:
            if self._closed:
                # The process is exiting and its last flush may have run already.
                closed = True
            else:
                closed = False
                if len(self._pending) >= settings.REFERRAL["CLICK_BUFFER_MAX"]:
                    # The database has refused writes for a long time; memory is not unlimited.
                    self.dropped += 1
                    log.error(
                        "click buffer full (%d waiting): click %s not recorded", len(self._pending), click.public_id
                    )
                    return
                self._pending.append(click)
                if self._thread is None or not self._thread.is_alive():
                    self._start()
                elif len(self._pending) >= settings.REFERRAL["CLICK_FLUSH_BATCH"]:
                    self._wake.notify()
        if closed:
            write_clicks([click])

    def find_all(self, public_ids: set[uuid.UUID]) -> list[PendingClick]:
        """The clicks waiting (or being written) with one of these public ids."""
        with self._lock:
            # A failed flush puts its batch back before it empties `_in_flight`: once each.
            return list({click.public_id: click for click in (*self._in_flight, *self._pending)
                         if click.public_id in public_ids}.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._in_flight)

    def flush(self) -> int:
        """Write what is waiting, from the calling thread (outside any transaction of its own)."""
        with self._flushing:
            with self._lock:
                batch, self._pending = self._pending, []
                self._in_flight = batch
            if not batch:
                return 0
            try:
                return self._write(batch)
            except BaseException:
                with self._lock:
                    self._pending[:0] = batch  # kept, in order, for the next attempt
                raise
            finally:
                with self._lock:
                    self._in_flight = []

    def stop(self, timeout: float = 10.0) -> int:
        """Stop the thread and write whatever is left. Returns how many clicks were written."""
        with self._lock:
            self._stopping = True
            self._wake.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._lock:
            self._thread = None
            self._stopping = False
        return self.flush()

    def close(self) -> None:
        """At process exit: write what is left; later clicks (if any) are written one by one."""
        with self._lock:
            self._closed = True
        try:
            written = self.stop()
        except Exception:
            log.exception("could not write %d buffered clicks at exit", len(self))
            return
        if written:
            log.info("wrote %d buffered clicks at exit", written)

    def _start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="click-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failures = 0
        while True:
            interval = settings.REFERRAL["CLICK_FLUSH_INTERVAL_MS"] / 1000
            with self._lock:
                if not self._stopping and len(self._pending) < settings.REFERRAL["CLICK_FLUSH_BATCH"]:
                    # After a failure wait longer each time (up to 30 s): the database is struggling.
                    self._wake.wait(timeout=min(interval * 2**failures, 30.0))
                stopping = self._stopping
            if stopping:
                connections.close_all()
                return  # `stop()` writes the rest from its own thread
            try:
                self.flush()
                failures = 0
            except Exception:
                failures = min(failures + 1, 8)
                log.exception("could not write buffered clicks (%d waiting); retrying", len(self))
                connections.close_all()  # a broken connection is reopened on the next attempt

    @staticmethod
    def _write(batch: list[PendingClick]) -> int:
        try:
            return write_clicks(batch)
        except ROW_REFUSED:
            # One bad row (its referrer deleted since, text the database cannot store) must not hold
            # back the others: row by row, and only the rows refused on their own are given up. Any
            # other error (the database is down) propagates and the whole batch is retried.
            written = 0
            for click in batch:
                try:
                    written += write_clicks([click])
                except ROW_REFUSED:
                    log.error("click %s refused by the database, dropped", click.public_id, exc_info=True)
            return written

    def _after_fork_in_child(self) -> None:
        # The parent keeps (and writes) its own clicks; the child starts empty, with fresh locks.
        self._reset()


buffer = ClickBuffer()
os.register_at_fork(after_in_child=buffer._after_fork_in_child)
atexit.register(buffer.close)
