"""Batch ingestion with set-based writes, and applying stored events.

A batch is validated in Python and its accounts and templates resolved in one query each. The
stateless money events (`BULK_TYPES`: their only database checks are that the account and
template exist) are then stored with one INSERT that also skips the ids the log already holds
(answered `duplicate`, or rejected when the content differs), and answered `accepted`. Events
whose outcome depends on state at application time (a redemption above the credits, a refund
above the payment, a sign-up with codes and clicks, ...) are stored and applied in one
transaction, so they can still be answered `rejected`; everything stored before them is applied
first, so they see its effects. Two or more of a type the engine applies set-based in a row
(sign-ups, refunds, redemptions, template publications) go together (`_store_and_apply_run`: one INSERT, one engine
call, a rejected one taken out of the log again); any other goes alone (`ingest_event`).

A run of up to `INGEST_INLINE_APPLY_MAX` stateless events is applied in the transaction that
stores it (`_store_and_apply`): their accounts are locked first, the events are stored as
applied and handed to the engine as built, with no claim and no read-back. A longer run is
stored pending (`Event.applied_at` null) and applied by `apply_stored_events`, a task queued
on commit, through `apply_pending`: batches of up to `APPLY_BATCH_MAX` in id order across any
number of accounts, each in one transaction that locks the batch's accounts (in id order),
claims their pending events with one UPDATE and hands them to the engine
(`referrals.engine.apply.apply_events`). Two appliers at once (two requests, a request and the
task, the sweeper) never apply an event twice or out of order; whatever an interrupted or
failed apply leaves pending, the sweeper applies.
"""
import logging
from dataclasses import dataclass
from datetime import datetime

from celery import current_app, shared_task
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from ..models import Account, Event, Template
from . import apply as engine
from . import bulk
from . import events as ev
from .apply import EventRejected

log = logging.getLogger(__name__)

BULK_TYPES = engine.MONEY_TYPES


@dataclass
class IngestResult:
    id: str
    status: str  # accepted | duplicate | rejected
    code: str = ""
    message: str = ""
    fields: dict | None = None
    warnings: list | None = None

    def as_dict(self) -> dict:
        out = {"id": self.id, "status": self.status}
        if self.status == "rejected":
            out["error"] = {"code": self.code, "message": self.message, "fields": self.fields or {}}
        if self.warnings:
            out["warnings"] = self.warnings
        return out




def ingest_event(raw, *, source: str = Event.Source.API, now: datetime | None = None) -> IngestResult:
    """Validate, deduplicate and apply one external event atomically."""
    raw_id = raw.get("id") if isinstance(raw, dict) else None
    result_id = raw_id if isinstance(raw_id, str) else ""
    try:
        valid = ev.validate_event(raw, now=now)
    except ev.EventInvalid as exc:
        return IngestResult(result_id, "rejected", exc.code, str(exc), exc.fields)
    return ingest_valid_event(valid, source=source)


def ingest_valid_event(valid: ev.ValidEvent, *, source: str = Event.Source.API) -> IngestResult:
    """Deduplicate and apply one validated event atomically (the synchronous path)."""
    known = _known_outcome(valid)
    if known:
        return known
    # Events of this account that a batch stored and a task has not applied yet come first,
    # so this one is checked against their effects (and applied in id order, as in a replay).
    account_id = Account.objects.filter(external_id=valid.account).values_list("pk", flat=True).first()
    if account_id is not None:
        apply_pending(account_id=account_id)
    try:
        with transaction.atomic():
            if account_id is not None:
                # The account's lock before the event's id: per account, ids then follow the order
                # events are applied in, which is the order a replay (and a milestone's "spend up to
                # this charge") uses. Without it, two racing charges could each count only itself.
                list(Account.objects.select_for_update().filter(pk=account_id).values_list("pk", flat=True))
            event = _event(valid, account_id, source, applied_at=timezone.now())
            event.save(force_insert=True)
            engine.apply_events([event], on_error=None)
    except EventRejected as exc:
        return IngestResult(valid.external_id, "rejected", exc.code, str(exc), exc.fields)
    except IntegrityError:
        # Two senders raced on the same id: the loser answers like a plain duplicate.
        known = _known_outcome(valid)
        if known:
            return known
        raise
    return IngestResult(valid.external_id, "accepted", warnings=event.warnings or None)


def _known_outcome(valid: ev.ValidEvent) -> IngestResult | None:
    stored_hash = Event.objects.filter(external_id=valid.external_id).values_list("content_hash", flat=True).first()
    return None if stored_hash is None else _repeat(valid, stored_hash)


def ingest_batch(raws: list, *, source: str = Event.Source.API, now=None) -> list[IngestResult]:
    """Answer every event of a batch, in input order: accepted, duplicate or rejected."""
    now = now or timezone.now()
    results: list[IngestResult | None] = [None] * len(raws)
    chunk: list[tuple[int, ev.ValidEvent]] = []
    chunk_ids: set[str] = set()
    stored: list[tuple[int, int]] = []  # (event id, account id) of the events stored and not applied yet
    run: list[tuple[int, ev.ValidEvent]] = []  # stateful events of one type in a row, not ingested yet
    for index, raw in enumerate(raws):
        try:
            valid = ev.validate_event(raw, now=now)
        except ev.EventInvalid as exc:
            results[index] = IngestResult(_raw_id(raw), "rejected", exc.code, str(exc), exc.fields)
            continue
        except Exception:
            log.exception("event could not be validated")
            results[index] = _internal_error(raw)
            continue
        if valid.external_id in chunk_ids:
            # The same id twice among stateless events: store the first, then judge this one
            # against it (the INSERT finds it taken).
            stored += _store(chunk, results, source=source)
            chunk, chunk_ids = [], set()
        if valid.type in BULK_TYPES:
            _ingest_run(run, results, source=source, now=now)
            run = []
            chunk.append((index, valid))
            chunk_ids.add(valid.external_id)
        else:
            # A stateful event sees everything stored before it applied; it is deduplicated
            # and applied with the stateful events of its type around it (and may still be
            # rejected).
            stored += _store(chunk, results, source=source)
            chunk, chunk_ids = [], set()
            apply_pending(stored=stored)
            stored = []
            if run and run[0][1].type != valid.type:
                _ingest_run(run, results, source=source, now=now)
                run = []
            run.append((index, valid))
    _ingest_run(run, results, source=source, now=now)
    stored += _store(chunk, results, source=source)
    if stored:
        transaction.on_commit(lambda ids=[pk for pk, _ in stored]: queue_apply(ids))
    return results


def _ingest_run(run: list[tuple[int, ev.ValidEvent]], results: list, *, source: str, now) -> None:
    """Stateful events of one type in a row (sign-ups, refunds, redemptions, ...): two or more of
    a type the engine applies set-based are stored and applied in one transaction
    (`_store_and_apply_run`), with the answers one by one would give; otherwise, or if that
    fails as a whole, each goes through the synchronous path."""
    if len(run) > 1 and engine.runs_set_based(run[0][1].type):
        try:
            if _store_and_apply_run(run, results, source=source):
                return
        except Exception:
            log.exception("a run of %d %s events could not be ingested together; one by one", len(run), run[0][1].type)
    for index, valid in run:
        if results[index] is None:
            results[index] = _ingest_one(valid, source=source, now=now)


def _store_and_apply_run(run: list[tuple[int, ev.ValidEvent]], results: list, *, source: str) -> bool:
    """Store the run's new events and apply them with the engine in one transaction, answering
    each as `ingest_valid_event` would: an id already in the log is a duplicate (or a conflict),
    an event the engine rejects is answered `rejected` and taken out of the log again (its
    savepoint already took its effects), the rest `accepted`. Returns False, having written and
    answered nothing, if an id comes twice in the run (one by one then judges the second
    against the first)."""
    ids = [valid.external_id for _, valid in run]
    if len(set(ids)) < len(ids):
        return False
    known = dict(Event.objects.filter(external_id__any_of=ids).values_list("external_id", "content_hash"))
    fresh = [(index, valid) for index, valid in run if valid.external_id not in known]
    names = {valid.account for _, valid in fresh}
    with transaction.atomic():
        accounts = dict(Account.objects.select_for_update().filter(external_id__any_of=names).order_by("pk")
                        .values_list("external_id", "pk"))
        now = timezone.now()
        events = Event.objects.bulk_create([_event(valid, accounts.get(valid.account), source, applied_at=now)
                                            for _, valid in fresh])
        ours = {event.pk for event in events}
        failed: dict[int, Exception] = {}

        def on_error(event: Event, exc: Exception) -> None:
            if event.pk in ours:
                failed[event.pk] = exc  # answered rejected; nothing of it stays
            else:
                engine.record_error(event, exc)  # an event an earlier request left pending

        earlier = _claim(sorted(accounts.values()), [], max(ours)) if ours else []
        engine.apply_events(sorted(earlier + events, key=lambda event: event.pk), on_error=on_error)
        if failed:
            Event.objects.filter(pk__any_of=list(failed)).delete()
    for index, valid in run:
        if valid.external_id in known:
            results[index] = _repeat(valid, known[valid.external_id])
    for (index, valid), event in zip(fresh, events, strict=True):
        exc = failed.get(event.pk)
        if exc is None:
            results[index] = IngestResult(valid.external_id, "accepted", warnings=event.warnings or None)
        elif isinstance(exc, EventRejected):
            results[index] = IngestResult(valid.external_id, "rejected", exc.code, str(exc), exc.fields)
        else:
            results[index] = _internal_error(valid.raw)
    return True


def _raw_id(raw) -> str:
    raw_id = raw.get("id") if isinstance(raw, dict) else None
    return raw_id if isinstance(raw_id, str) else ""


def _internal_error(raw) -> IngestResult:
    # One event that trips a bug must not fail the whole batch: a 500 would leave the sender
    # unsure which events were kept.
    return IngestResult(_raw_id(raw), "rejected", "internal_error",
                        "this event could not be processed; nothing of it was applied", {})


def _repeat(valid: ev.ValidEvent, stored_hash: str) -> IngestResult:
    if stored_hash == valid.content_hash:
        return IngestResult(valid.external_id, "duplicate")
    reason = "already used by an event with different content"
    return IngestResult(valid.external_id, "rejected", "id_conflict", f"id: {reason}", {"id": reason})


def _ingest_one(valid: ev.ValidEvent, *, source: str, now) -> IngestResult:
    try:
        return ingest_valid_event(valid, source=source)
    except Exception:
        log.exception("event %s could not be ingested", valid.external_id)
        return _internal_error(valid.raw)


def _rejected(valid: ev.ValidEvent, field: str, reason: str, code: str) -> IngestResult:
    return IngestResult(valid.external_id, "rejected", code, f"{field}: {reason}", {field: reason})


def _store(chunk: list[tuple[int, ev.ValidEvent]], results: list, *, source: str) -> list[tuple[int, int]]:
    """Store stateless money events with one INSERT that also finds the ids already in the log
    (answered duplicate or conflict). Up to `INGEST_INLINE_APPLY_MAX` of them are applied in the
    same transaction (`_store_and_apply`); returns the (id, account id) of the new events left
    for the task to apply."""
    if not chunk:
        return []
    accounts = dict(Account.objects.filter(external_id__any_of={valid.account for _, valid in chunk})
                    .values_list("external_id", "pk"))
    wanted_templates = {valid.template for _, valid in chunk if valid.template}
    templates = set(Template.objects.filter(external_id__any_of=wanted_templates)
                    .values_list("external_id", flat=True)) if wanted_templates else set()
    rows: list[tuple[int, ev.ValidEvent, int]] = []
    for index, valid in chunk:
        if valid.account not in accounts:
            results[index] = _rejected(valid, "account", f"unknown account {valid.account!r}", "unknown_account")
        elif valid.template and valid.template not in templates:
            results[index] = _rejected(valid, "template", f"unknown template {valid.template!r}", "unknown_template")
        else:
            rows.append((index, valid, accounts[valid.account]))
    if not rows:
        return []
    inline = len(rows) <= settings.INGEST_INLINE_APPLY_MAX
    with transaction.atomic():
        ids = _store_and_apply(rows, source=source) if inline else _insert(rows, source=source)
    taken = [valid.external_id for (_, valid, _), event_id in zip(rows, ids, strict=True) if event_id is None]
    stored_hashes = dict(Event.objects.filter(external_id__any_of=taken).values_list("external_id", "content_hash")
                         ) if taken else {}
    stored = []
    for (index, valid, account_id), event_id in zip(rows, ids, strict=True):
        if event_id is None:
            results[index] = _repeat(valid, stored_hashes[valid.external_id])
        else:
            results[index] = IngestResult(valid.external_id, "accepted")
            if not inline:
                stored.append((event_id, account_id))
    return stored


def _store_and_apply(rows: list[tuple[int, ev.ValidEvent, int]], *, source: str) -> list[int | None]:
    """Store the rows and apply them in the caller's transaction; per row its new id, or None.

    Their accounts are locked first (in id order, as `apply_pending` does), so per account the
    new ids follow the order events are applied in. The events are stored as applied and handed
    to the engine as built here (no claim, no reading them back), after any event of those
    accounts that an earlier request left pending (claimed here). If applying fails as a whole,
    its savepoint is rolled back and the events stay stored, pending, for the task or the sweeper:
    accepted is only answered for what the transaction commits."""
    accounts = sorted({account_id for _, _, account_id in rows})
    list(Account.objects.select_for_update().filter(pk__any_of=accounts).order_by("pk").values_list("pk", flat=True))
    now = timezone.now()
    ids = _insert(rows, source=source, applied_at=now)
    new = [_stored_event(valid, account_id, source, pk=event_id, applied_at=now)
           for (_, valid, account_id), event_id in zip(rows, ids, strict=True) if event_id is not None]
    if not new:
        return ids
    try:
        with transaction.atomic():
            earlier = _claim(accounts, [], new[-1].pk)
            engine.apply_events(sorted(earlier + new, key=lambda event: event.pk))
    except Exception:
        log.exception("%d stored events could not be applied in their request; left to the task", len(new))
        Event.objects.filter(pk__any_of=[event.pk for event in new]).update(applied_at=None)
        transaction.on_commit(lambda pks=[event.pk for event in new]: queue_apply(pks))
    return ids


def _insert(rows: list[tuple[int, ev.ValidEvent, int]], *, source: str, applied_at=None) -> list[int | None]:
    """Insert the rows whose id the log does not hold yet; per row its new id, or None.

    On PostgreSQL this is one INSERT ... ON CONFLICT DO NOTHING with one array per column: no
    model instance per event (building and converting those was most of a batch's time), and
    a concurrent request storing the same id first is waited for, then skipped."""
    if bulk.is_postgres():
        valids = [valid for _, valid, _ in rows]
        inserted = dict(bulk.insert_rows(Event, {
            "external_id": [valid.external_id for valid in valids],
            "type": [valid.type for valid in valids],
            "account_id": [account_id for _, _, account_id in rows],
            "occurred_at": [valid.occurred_at for valid in valids],
            "payload": [valid.canonical_json or ev.canonical_json(valid.raw) for valid in valids],
            "content_hash": [valid.content_hash for valid in valids],
            "amount": [valid.amount for valid in valids],
            "product": [valid.product for valid in valids],
            "runtime_seconds": [valid.runtime_seconds for valid in valids],
        }, constants={"source": source, "received_at": applied_at or timezone.now(), "refunded": 0,
                      "applied_at": applied_at, "apply_error": ""},
            unique="external_id", returning=("external_id", "id")))
        return [inserted.get(valid.external_id) for valid in valids]
    taken = set(Event.objects.filter(external_id__any_of=[valid.external_id for _, valid, _ in rows])
                .values_list("external_id", flat=True))
    events = [None if valid.external_id in taken else _event(valid, account_id, source, applied_at=applied_at)
              for _, valid, account_id in rows]
    try:
        with transaction.atomic():
            Event.objects.bulk_create([event for event in events if event is not None])
    except IntegrityError:
        # Stored by a concurrent request in between: one insert each, the losers skipped.
        for position, event in enumerate(events):
            if event is None:
                continue
            event.pk = None
            try:
                with transaction.atomic():
                    event.save(force_insert=True)
            except IntegrityError:
                events[position] = None
    return [event.pk if event is not None else None for event in events]


def _event(valid: ev.ValidEvent, account_id: int | None, source: str, *, applied_at) -> Event:
    """The (unsaved) log row of a validated event; `applied_at` None: stored, not applied yet."""
    return Event(external_id=valid.external_id, type=valid.type, source=source, account_id=account_id,
                 occurred_at=valid.occurred_at, payload=valid.raw, content_hash=valid.content_hash,
                 amount=valid.amount, product=valid.product, runtime_seconds=valid.runtime_seconds,
                 warnings=valid.warnings or None, applied_at=applied_at)


_EVENT_COLUMNS = [field.attname for field in Event._meta.concrete_fields]


def _stored_event(valid: ev.ValidEvent, account_id: int, source: str, *, pk: int, applied_at) -> Event:
    """The event as `_insert` stored it, built as if read back from its row (`Model.from_db`
    takes the values in column order: a third of the time of keyword arguments)."""
    row = {"id": pk, "external_id": valid.external_id, "type": valid.type, "source": source,
           "account_id": account_id, "occurred_at": valid.occurred_at, "received_at": applied_at,
           "payload": valid.raw, "content_hash": valid.content_hash, "amount": valid.amount,
           "product": valid.product, "template_id": None, "refunds_id": None, "refunded": 0,
           "runtime_seconds": valid.runtime_seconds, "actor_id": None, "applied_at": applied_at,
           "apply_error": "", "warnings": None}
    return Event.from_db(connection.alias, _EVENT_COLUMNS, [row[name] for name in _EVENT_COLUMNS])


# --------------------------------------------------------------------------- applying


def apply_pending(*, event_ids: list[int] | None = None, account_id: int | None = None,
                  stored: list[tuple[int, int]] | None = None) -> int:
    """Apply every accepted event not applied yet (or those among `event_ids`, or of one
    account); returns how many were applied. This is the entry point of the task, the sweeper
    and the synchronous path (which first applies what its account has pending). `stored` is
    the (id, account id) of events this request just stored: applying them needs no lookup
    first (the claim still skips any that another applier took meanwhile).

    Batches of up to `APPLY_BATCH_MAX` events in id order, across any number of accounts, each
    in one transaction: their accounts' rows are locked (in id order, so two appliers never
    deadlock; the second waits, then finds the events applied), every pending event of those
    accounts up to the batch's last id is claimed (so per account no event is skipped or
    applied out of id order), and the engine applies them (`referrals.engine.apply.apply_events`).
    """
    if stored is not None:
        event_ids = [pk for pk, _ in stored]
    if event_ids is not None and not event_ids:
        return 0
    size = settings.APPLY_BATCH_MAX
    applied = 0
    while True:
        if stored is not None and len(stored) <= size:
            head, stored = sorted(stored), None
        else:
            pending = Event.objects.filter(applied_at__isnull=True, apply_error="")
            if event_ids is not None:
                pending = pending.filter(pk__any_of=event_ids)
            if account_id is not None:
                pending = pending.filter(account_id=account_id)
            head = list(pending.order_by("id").values_list("pk", "account_id")[:size])
        if not head:
            return applied
        with transaction.atomic():
            accounts = sorted({account for _, account in head if account is not None})
            # The accounts' rows are the appliers' claim. (.exists() would not do: Django drops
            # FOR UPDATE from an EXISTS query.)
            list(Account.objects.select_for_update().filter(pk__any_of=accounts).order_by("pk")
                 .values_list("pk", flat=True))
            events = _claim(accounts, [pk for pk, _ in head], head[-1][0])
            if events:
                applied += engine.apply_events(events)
        if len(head) < size:
            return applied


def _claim(accounts: list[int], ids: list[int], last: int) -> list[Event]:
    """Mark applied, and return in id order, the pending events up to id `last` that are among
    `ids` or of `accounts`: on PostgreSQL one `UPDATE ... RETURNING` (the rows come back as
    they were claimed, with their new `applied_at`)."""
    now = timezone.now()
    if bulk.is_postgres():
        fields = Event._meta.concrete_fields
        with connection.cursor() as cursor:
            cursor.execute(bulk.sql(
                "UPDATE {event} SET applied_at = %s WHERE applied_at IS NULL AND apply_error = '' AND id <= %s "
                "AND (account_id = ANY(%s::bigint[]) OR id = ANY(%s::bigint[])) RETURNING {columns}",
                event=bulk.table(Event), columns=", ".join(field.column for field in fields)),
                [now, last, bulk.array_text(accounts), bulk.array_text(ids)])
            rows = cursor.fetchall()
        # Rows to model instances as a query would build them (JSON columns come back as text).
        names = [field.attname for field in fields]
        json_at = [(i, field) for i, field in enumerate(fields) if field.get_internal_type() == "JSONField"]
        events = []
        for row in rows:
            row = list(row)
            for i, field in json_at:
                row[i] = field.from_db_value(row[i], None, connection)
            events.append(Event.from_db(connection.alias, names, row))
        return sorted(events, key=lambda event: event.pk)
    events = list(Event.objects.filter(applied_at__isnull=True, apply_error="", pk__lte=last)
                  .filter(Q(account_id__any_of=accounts) | Q(pk__any_of=ids)).order_by("id"))
    if events:
        Event.objects.filter(pk__any_of=[e.pk for e in events]).update(applied_at=now)
    return events


@shared_task(name="referrals.apply_stored_events", ignore_result=True)
def apply_stored_events(event_ids: list[int]) -> int:
    """Apply the events a large batch stored (see `ingest_batch`)."""
    return apply_pending(event_ids=event_ids)


def queue_apply(event_ids: list[int]) -> None:
    """Queue the task; without a broker configured (or if it is unreachable) apply now."""
    app = current_app
    if app.conf.task_always_eager or app.conf.broker_url:
        try:
            apply_stored_events.delay(event_ids)
            return
        except Exception:
            log.exception("could not queue apply_stored_events; applying %d events inline", len(event_ids))
    apply_pending(event_ids=event_ids)
