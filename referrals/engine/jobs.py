"""The periodic jobs of SPEC "Periodic jobs", as plain services run for an explicit time.

Each job is idempotent (a second run finds nothing left to do) and set-based: a handful of SQL
statements whatever the row count (aggregates, INSERT ... SELECT, UPDATE ... FROM; see
`referrals.engine.bulk`). Two runs of one job are serialised by `bulk.job_lock`. Jobs that move value
log an internal event, so `verify_ledger` replays them in order. Beat runs them through
`referrals.tasks.run_job`; `manage.py run_jobs --at` and `POST /api/v1/jobs/run` run them too.
Every run first applies accepted events still unapplied (`referrals.engine.sweeper`).
"""
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ledger.models import Book
from ledger.money import format_exact, to_units

from ..models import Accrual, Application, CreditGrant, Event, JobRun, MilestoneAward, Program, Referral, Template
from . import bulk, outbox, services, sweeper, versions
from . import events as ev


def revenue_share_gates(at: datetime) -> dict:
    """Open an application for every referrer that meets a gated programme's thresholds.

    One INSERT ... SELECT per gated programme: referral counts and referred spend are
    aggregated in SQL, and a referrer with an application already is skipped (the unique
    constraint settles a race between two runs).
    """
    opened = 0
    when = bulk.db_datetime(at)
    ineligible = Referral.Status.INELIGIBLE
    for program in versions.programs_at(at):  # the gates in force at the job's time
        if not program.requires_approval:
            continue
        opened += bulk.execute(
            """
            INSERT INTO {application} (program_id, program_version, account_id, status, referrals_at_open,
                                       spend_at_open, opened_at, reason)
            SELECT %s, %s, c.referrer_id, %s, c.n, COALESCE(s.total, 0), %s, ''
            FROM (SELECT referrer_id, COUNT(*) AS n FROM {referral}
                  WHERE status <> %s AND created_at <= %s GROUP BY referrer_id HAVING COUNT(*) >= %s) c
            LEFT JOIN (SELECT r.referrer_id, SUM(e.amount - e.refunded) AS total
                       FROM {event} e JOIN {referral} r ON r.referred_id = e.account_id
                       WHERE e.type = %s AND e.occurred_at <= %s AND r.status <> %s AND r.created_at <= %s
                       GROUP BY r.referrer_id) s ON s.referrer_id = c.referrer_id
            WHERE COALESCE(s.total, 0) >= %s
              AND NOT EXISTS (SELECT 1 FROM {application} a WHERE a.program_id = %s AND a.account_id = c.referrer_id)
            ON CONFLICT DO NOTHING""",
            [program.pk, program.version, Application.Status.OPEN, when, ineligible, when, program.gate_min_referrals,
             ev.USAGE_CHARGED, when, ineligible, when, to_units(program.gate_min_spend), program.pk],
            application=bulk.table(Application), referral=bulk.table(Referral), event=bulk.table(Event))
    return {"applications_opened": opened}


def _versions_used(at: datetime) -> dict:
    """The job event names the programme versions in force at its time, which its handler uses."""
    return {"program_versions": versions.load().numbers_at(at)}


def template_gates(at: datetime) -> dict:
    _, released = services.record_job_event(services.TEMPLATES_QUALIFIED, at=at, payload=_versions_used(at))
    return {"accruals_released": released}


def _apply_template_gates(event: Event, replay: bool) -> int:
    """Qualify every template whose runtime up to the event's time reaches the gate, then
    release what its creator earned on it: one UPDATE per programme plus one release."""
    at = bulk.db_datetime(event.occurred_at)
    effect = 0
    for program in versions.programs_at(event.occurred_at, kinds=[Program.Kind.TEMPLATE_SHARE]):
        min_seconds = int(program.template_min_runtime_hours * 3600)
        qualified = bulk.execute(
            "UPDATE {template} SET qualified_at = %s WHERE qualified_at IS NULL AND id IN ("
            "SELECT template_id FROM {event} WHERE type = %s AND occurred_at <= %s "
            "AND template_id IS NOT NULL GROUP BY template_id HAVING SUM(runtime_seconds) >= %s)",
            [at, ev.USAGE_CHARGED, at, min_seconds], template=bulk.table(Template), event=bulk.table(Event))
        if not qualified:
            continue
        just_qualified = Accrual.objects.filter(template__qualified_at=event.occurred_at, template__isnull=False)
        # A template that qualifies with nothing held still counts as an effect.
        effect += qualified + services.release_ready(
            just_qualified, event=event, rule=f"{program.key}:template-qualified", at=event.occurred_at,
            clearing="held_for_template")
        # What stays held for another reason (fraud, the hold period) is no longer held for the template.
        just_qualified.filter(held_for_template=True).update(held_for_template=False)
    return effect


def milestones(at: datetime) -> dict:
    _, awarded = services.record_job_event(services.MILESTONES_CAUGHT_UP, at=at, payload=_versions_used(at))
    return {"milestones_awarded": awarded}


def _apply_milestones(event: Event, replay: bool) -> int:
    """Award every milestone crossed by the event's time but not yet paid: per programme, one
    INSERT of the awards, one INSERT per bonus of the accruals, and one set-based posting."""
    at = bulk.db_datetime(event.occurred_at)
    awarded = 0
    for program in versions.programs_at(event.occurred_at, kinds=[Program.Kind.MILESTONE]):
        threshold = to_units(program.milestone_threshold)
        bonuses = [(b, to_units(v)) for b, v in (("referrer_id", program.referrer_bonus),
                                                 ("referred_id", program.referred_bonus))]
        if threshold <= 0 or not program.event_types or not any(v > 0 for _, v in bonuses):
            continue
        names = {"event": bulk.table(Event), "award": bulk.table(MilestoneAward), "referral": bulk.table(Referral),
                 "accrual": bulk.table(Accrual), "types": ", ".join(["%s"] * len(program.event_types)),
                 "product": " AND product = %s" if program.product else ""}
        crossed_params = [*program.event_types, at, *([program.product] if program.product else []), threshold]
        new_awards = bulk.execute(
            "INSERT INTO {award} (program_id, referral_id, event_id) "
            "SELECT %s, r.id, %s FROM {referral} r WHERE r.referred_id IN ("
            "SELECT account_id FROM {event} WHERE type IN ({types}) AND occurred_at <= %s{product} "
            "AND account_id IS NOT NULL GROUP BY account_id HAVING SUM(amount - refunded) >= %s) "
            "AND NOT EXISTS (SELECT 1 FROM {award} m WHERE m.program_id = %s AND m.referral_id = r.id) "
            "ON CONFLICT DO NOTHING",
            [program.pk, event.pk, *crossed_params, program.pk], **names)
        if not new_awards:
            continue
        held_until = event.occurred_at + timedelta(days=program.hold_days) if program.hold_days else None
        # Held for fraud when the referral is ineligible; held for the hold period when there is one.
        held = "1 = 1" if held_until else "r.status = %s"
        held_params = [] if held_until else [Referral.Status.INELIGIBLE]
        for beneficiary, amount in bonuses:
            if amount <= 0:
                continue
            bulk.execute(
                "INSERT INTO {accrual} (program_id, program_version, rule, beneficiary_id, event_id, referral_id, "
                "template_id, amount, reversed, destination, track, state, held_for_gate, held_for_template, "
                "held_for_fraud, held_until, expires_days, created_at, released_at) "
                "SELECT %s, %s, %s, r.{beneficiary}, %s, r.id, NULL, %s, 0, %s, '', "
                "CASE WHEN {held} THEN %s ELSE %s END, %s, %s, r.status = %s, %s, 0, %s, "
                "CASE WHEN {held} THEN NULL ELSE %s END "
                "FROM {award} m JOIN {referral} r ON r.id = m.referral_id "
                "WHERE m.event_id = %s AND m.program_id = %s",
                [program.pk, program.version, f"{program.key}:milestone", event.pk, amount, program.pays_in,
                 *held_params, Accrual.State.HELD, Accrual.State.RELEASED, False, False,
                 Referral.Status.INELIGIBLE, bulk.db_datetime(held_until) if held_until else None, at,
                 *held_params, at, event.pk, program.pk],
                beneficiary=beneficiary, held=held, **names)
        created = Accrual.objects.filter(event=event, program=program)
        bulk.post_moves(
            kind="accrual", rule=f"{program.key}:milestone", event=event,
            moves_sql=bulk.sql(
                "SELECT beneficiary_id AS account_id, program_id, %s AS from_book, "
                "CASE WHEN state = %s THEN %s ELSE destination END AS to_book, SUM(amount) AS amount "
                "FROM {accrual} WHERE event_id = %s AND program_id = %s "
                "GROUP BY beneficiary_id, program_id, state, destination", **names),
            params=[Book.EARNINGS_EXPENSE, Accrual.State.HELD, Book.PENDING, event.pk, program.pk])
        for accrual in created.iterator(chunk_size=2000):
            outbox.publish(outbox.COMMISSION_CREATED, account_id=accrual.beneficiary_id, data={
                "accrual": accrual.pk, "program": program.key, "rule": accrual.rule,
                "amount": format_exact(accrual.amount), "held": accrual.state == Accrual.State.HELD,
                "book": Book.PENDING if accrual.state == Accrual.State.HELD else accrual.destination,
                "event": event.external_id})
        awarded += new_awards
    return awarded


def expire_credits(at: datetime) -> dict:
    _, expired = services.record_job_event(services.CREDITS_EXPIRED, at=at, payload={})
    return {"grants_expired": expired}


def _apply_credit_expiry(event: Event, replay: bool) -> int:
    """Expire every grant lapsed by the event's time: the lapsed grants are snapshotted (and
    row-locked on PostgreSQL, so a redemption cannot spend them meanwhile), what is left of
    them is posted from the holders' credits to the expired book, and they are closed."""
    at = bulk.db_datetime(event.occurred_at)
    lapsed = bulk.sql(
        "SELECT g.id, g.account_id, a.program_id, g.remaining FROM {grant} g JOIN {accrual} a ON a.id = g.accrual_id "
        "WHERE g.expires_at <= %s AND g.expired_at IS NULL{lock}",
        grant=bulk.table(CreditGrant), accrual=bulk.table(Accrual), lock=bulk.lock_clause("g"))
    with bulk.Batch("lapsed", lapsed, [at]) as batch:
        if not batch.count:
            return 0
        bulk.post_moves(
            kind="expiry", rule="signup-credit:expired", event=event,
            moves_sql=bulk.sql("SELECT account_id, program_id, %s AS from_book, %s AS to_book, "
                               "SUM(remaining) AS amount FROM {batch} GROUP BY account_id, program_id", batch=batch),
            params=[Book.CREDITS, Book.EXPIRED])
        bulk.execute("UPDATE {grant} SET remaining = 0, expired_at = %s WHERE {lapsed}", [at],
                     grant=bulk.table(CreditGrant), lapsed=bulk.one_of("id", batch))
        return batch.count


def release_holds(at: datetime) -> dict:
    _, released = services.record_job_event(services.EARNINGS_RELEASED, at=at, payload={})
    return {"accruals_released": released}


def _apply_hold_release(event: Event, replay: bool) -> int:
    due = Accrual.objects.filter(state=Accrual.State.HELD, held_until__lte=event.occurred_at)
    return services.release_ready(due, event=event, rule="hold-period-passed", at=event.occurred_at)


services.register_handler(services.TEMPLATES_QUALIFIED, _apply_template_gates)
services.register_handler(services.MILESTONES_CAUGHT_UP, _apply_milestones)
services.register_handler(services.CREDITS_EXPIRED, _apply_credit_expiry)
services.register_handler(services.EARNINGS_RELEASED, _apply_hold_release)

JOBS = {
    "revenue_share_gates": revenue_share_gates,
    "template_gates": template_gates,
    "milestones": milestones,
    "expire_credits": expire_credits,
    "release_holds": release_holds,
}
# Jobs that commit per item themselves (one provider call per payout, claimed with a row lock):
# not wrapped in one transaction, so a failure half-way keeps what the provider already did.
SELF_COMMITTING: set[str] = set()


def register_job(name: str, job, *, self_committing: bool = False) -> None:
    """Apps that build on referrals add their periodic jobs here (payouts: retry_stuck_payouts),
    so referrals never imports them."""
    JOBS[name] = job
    if self_committing:
        SELF_COMMITTING.add(name)


class UnknownJob(ValueError):
    pass


def future_run_problem(at: datetime) -> str | None:
    """Why jobs may not be run as of `at` from outside (API, command line), or None.

    A run dated in the future would expire live credits and release holds early (issue 15.9);
    only the clock skew allowed for events is tolerated. Tests and internal callers that need
    a later date call `run_jobs` directly."""
    skew = settings.REFERRAL["MAX_CLOCK_SKEW_SECONDS"]
    if at > timezone.now() + timedelta(seconds=skew):
        return f"is in the future (more than {skew} seconds ahead of the server's clock)"
    return None


def run_jobs(*, at: datetime | None = None, names: list[str] | None = None) -> dict[str, dict]:
    """Run the named jobs (all by default) as of `at`, recording a JobRun for each.

    Accepted events not applied yet (an interrupted apply) are applied first (`sweeper.sweep`),
    so no job works from a ledger that is missing them."""
    at = at or timezone.now()
    names = list(names or JOBS)
    unknown = [n for n in names if n not in JOBS]
    if unknown:
        raise UnknownJob(f"unknown job(s): {', '.join(unknown)}; known: {', '.join(JOBS)}")
    sweeper.sweep()
    results = {}
    for name in names:
        run = JobRun.objects.create(name=name, at=at)
        try:
            if name in SELF_COMMITTING:
                counts = JOBS[name](at)
            else:
                with transaction.atomic():
                    # A second run of the same job waits here, then finds nothing left to do.
                    bulk.job_lock(name)
                    counts = JOBS[name](at)
        except Exception as exc:
            run.error = f"{type(exc).__name__}: {exc}"
            run.finished_at = timezone.now()
            run.save(update_fields=["error", "finished_at"])
            raise
        run.counts = counts
        run.finished_at = timezone.now()
        run.save(update_fields=["counts", "finished_at"])
        results[name] = counts
    return results


__all__ = ["JOBS", "UnknownJob", "run_jobs"]
