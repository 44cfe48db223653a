"""Programme versions: which configuration of each programme is in force at a given time.

Every saved change of a `Program` (admin, `load_preset`, `save()`, `QuerySet.update()`) appends
a `ProgramVersion` holding all its configuration fields and the time it takes effect
(`record`). The engine applies an event with the versions in force at the event's
`occurred_at`, and a job with those in force at the job's `at` (`programs_at`, or `load()`
once for a batch of events at different times). A late-arriving event therefore uses the
rules of its own time, live and on replay alike, which is what lets `verify_ledger` rebuild
the same state after any edit.

When an edit takes effect: never before an event already applied, so history never changes.
By default a version is in force from just after the latest `occurred_at` of the applied
event log (from the epoch while the log is empty, so a preset loaded before any event covers
all of them); an explicit `effective_at` may be later, up to now, never earlier. Scheduling an
edit ahead of time is not supported: the `Program` row is the configuration in force now.
On PostgreSQL, readers take a shared advisory lock in the statement that loads the versions
and writers an exclusive one, so an edit waits for the events being applied (whose times it
must come after) and events applied after it see it.
"""
import bisect
import contextlib
import contextvars
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import connection, models, transaction
from django.db.models import Max
from django.utils import timezone

from ..models import Event, Program, ProgramVersion

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# pg_advisory_xact_lock key of the programme configuration (any constant the app owns).
LOCK_KEY = 0x70726F67  # "prog"
NOT_CONFIG = {"id", "updated_at"}
STEP = timedelta(microseconds=1)


@dataclass(frozen=True)
class _Author:
    actor: object = None
    source: str = "code"


_CODE = _Author()
_author: contextvars.ContextVar[_Author | None] = contextvars.ContextVar("program_version_author", default=None)


@contextlib.contextmanager
def authored(*, actor=None, source: str):
    """Name who makes the edits inside the block (admin, load_preset, ...) on their versions."""
    token = _author.set(_Author(actor, source))
    try:
        yield
    finally:
        _author.reset(token)


# --------------------------------------------------------------------------- snapshots


def config_fields() -> list[models.Field]:
    return [f for f in Program._meta.concrete_fields if f.name not in NOT_CONFIG]


def snapshot(program: Program) -> dict:
    """Every configuration field of a programme as plain JSON (decimals as fixed-point strings)."""
    out = {}
    for field in config_fields():
        value = getattr(program, field.attname)
        if isinstance(field, models.DecimalField) and value is not None:
            value = f"{Decimal(value):.{field.decimal_places}f}"
        out[field.attname] = value
    return out


def as_program(program_id: int, number: int, effective_at: datetime, config: dict) -> Program:
    """A read-only `Program` instance holding a version's configuration: the rules read it
    exactly like the row. `version` is its number; `save()` refuses it."""
    values = {}
    for field in config_fields():
        if field.attname not in config:
            values[field.attname] = field.get_default()  # a field added after the version was taken
            continue
        value = config[field.attname]
        if isinstance(field, models.DecimalField) and value is not None:
            value = Decimal(value)
        values[field.attname] = value
    program = Program(id=program_id, **values)
    program._state.adding = False
    program._state.db = "default"
    program.version = number
    program.version_effective_at = effective_at
    return program


def diff(before: dict | None, after: dict) -> dict[str, list]:
    """Field -> [before, after] of the fields that differ (all of them for a first version)."""
    before = before or {}
    return {name: [before.get(name), value] for name, value in after.items() if before.get(name) != value}


# --------------------------------------------------------------------------- reading


class Versions:
    """All versions of the programmes, loaded once: the configuration in force at any time."""

    def __init__(self, rows):
        by_program: dict[int, list[tuple[datetime, int, dict]]] = {}
        for program_id, number, effective_at, config in rows:
            by_program.setdefault(program_id, []).append((effective_at, number, config))
        self._versions = {pid: sorted(vs, key=lambda v: (v[0], v[1])) for pid, vs in by_program.items()}
        self._times = {pid: [v[0] for v in vs] for pid, vs in self._versions.items()}
        self._all_times = sorted(time for times in self._times.values() for time in times)
        self._built: dict[tuple[int, int], Program] = {}

    def epoch(self, at: datetime) -> int:
        """Which span between two version times `at` falls in: every time of one span has the
        same configuration in force (a cache key for what `at` returns)."""
        return bisect.bisect_right(self._all_times, at)

    def get(self, program_id: int, at: datetime) -> Program | None:
        """The programme's configuration in force at `at` (None before its first version)."""
        versions = self._versions.get(program_id)
        if not versions:
            return None
        # Sorted by (effective_at, number): the last one at or before `at` is the newest in force.
        position = bisect.bisect_right(self._times[program_id], at) - 1
        if position < 0:
            return None
        effective_at, number, config = versions[position]
        key = (program_id, number)
        if key not in self._built:
            self._built[key] = as_program(program_id, number, effective_at, config)
        return self._built[key]

    def at(self, at: datetime, *, kinds=(), enabled: bool = True) -> list[Program]:
        """The programmes in force at `at` (enabled ones by default), in `Program`'s order."""
        found = [p for p in (self.get(pid, at) for pid in self._versions) if p is not None]
        found = [p for p in found if (not kinds or p.kind in kinds) and (not enabled or p.enabled)]
        return sorted(found, key=lambda p: (p.preset, p.key))

    def numbers_at(self, at: datetime) -> dict[str, int]:
        """Programme key -> version number in force at `at`, for naming what a job used."""
        return {p.key: p.version for p in self.at(at, enabled=False)}


def load() -> Versions:
    """Every version of every programme with one query (few rows: programmes x edits)."""
    if connection.vendor == "postgresql":
        # The shared lock is taken in the same statement: an edit (exclusive) waits for this
        # transaction, so it cannot take effect before the events this transaction applies.
        # (UNION ALL runs its branches in order: the lock row first, then the versions.)
        with connection.cursor() as cursor:
            cursor.execute("SELECT NULL::bigint, NULL::integer, NULL::timestamptz, NULL::text "
                           "FROM (SELECT pg_advisory_xact_lock_shared(%s)) l UNION ALL "
                           "SELECT program_id, number, effective_at, config::text FROM referrals_programversion",
                           [LOCK_KEY])
            rows = [(pid, n, eff, json.loads(cfg)) for pid, n, eff, cfg in cursor if pid is not None]
        return Versions(rows)
    return Versions(ProgramVersion.objects.order_by().values_list("program_id", "number", "effective_at", "config"))


def program_at(program_id: int, at: datetime) -> Program | None:
    """The configuration of one programme in force at `at`, read like a Program."""
    return load().get(program_id, at)


def programs_at(at: datetime, *, kinds=(), enabled: bool = True) -> list[Program]:
    """The (enabled) programmes in force at `at`, of the given kinds: one query."""
    return load().at(at, kinds=kinds, enabled=enabled)


# --------------------------------------------------------------------------- writing


def end_of_log() -> datetime | None:
    """The latest time of an applied event: a new version may only take effect after it."""
    return Event.objects.filter(applied_at__isnull=False).aggregate(t=Max("occurred_at"))["t"]


def record(program_ids, *, effective_at: datetime | None = None) -> list[ProgramVersion]:
    """Append a version for each programme whose row differs from its latest version.

    Called in the transaction that saved the rows; a row equal to its latest version (e.g.
    `load_preset` run twice) adds nothing. Refuses (ValidationError naming the field) a kind
    change and an `effective_at` before the applied log or after now.
    """
    ids = sorted({pid for pid in program_ids if pid is not None})
    if not ids:
        return []
    with transaction.atomic():
        programs = list(Program.objects.filter(pk__in=ids).order_by("pk"))
        latest = {}
        for version in ProgramVersion.objects.filter(program_id__in=ids).order_by("program_id", "number"):
            latest[version.program_id] = version
        changed = [(p, snapshot(p)) for p in programs]
        changed = [(p, snap) for p, snap in changed if p.pk not in latest or latest[p.pk].config != snap]
        if not changed:
            return []
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
        log_end = end_of_log()
        author = _author.get() or _CODE
        created = []
        for program, snap in changed:
            previous = latest.get(program.pk)
            if previous is not None and previous.config.get("kind") != snap["kind"]:
                raise ValidationError({"kind": Program.KIND_FIXED})
            earliest = max(previous.effective_at if previous else EPOCH, log_end + STEP if log_end else EPOCH)
            when = effective_at or earliest
            if when < earliest:
                raise ValidationError({"effective_at": f"must not be before {earliest.isoformat()} (events up to "
                                                       "then were applied with the rules in force)"})
            if effective_at is not None and effective_at > max(timezone.now(), earliest):
                raise ValidationError({"effective_at": "must not be in the future (edits cannot be scheduled)"})
            created.append(ProgramVersion.objects.create(
                program=program, number=previous.number + 1 if previous else 1, effective_at=when, config=snap,
                source=author.source, created_by=author.actor if getattr(author.actor, "pk", None) else None))
    return created


def edit(program: Program, *, effective_at: datetime | None = None, **changes) -> ProgramVersion | None:
    """Change fields of a programme in code with an explicit effective time (default: as soon
    as allowed); returns the new version, or None when nothing changed."""
    with transaction.atomic():
        for name, value in changes.items():
            setattr(program, name, value)
        program.full_clean()
        models.Model.save(program)
        created = record([program.pk], effective_at=effective_at)
    return created[0] if created else None
