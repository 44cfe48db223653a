"""The periodic jobs of SPEC "Periodic jobs", as plain services run for an explicit time.

Each job is idempotent (a second run finds nothing left to do) and works from aggregates.
Jobs that move value log an internal event, so `verify_ledger` replays them in order.
"""
from datetime import datetime

from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone

from ledger.models import Book
from ledger.money import net_sum
from ledger.services import Leg, post

from . import events as ev
from . import services
from .models import Accrual, Application, CreditGrant, Event, JobRun, Program, Referral, Template


def revenue_share_gates(at: datetime) -> dict:
    """Open an application for every referrer that meets a gated programme's thresholds."""
    opened = 0
    for program in Program.objects.filter(enabled=True, requires_approval=True):
        eligible = Referral.objects.exclude(status=Referral.Status.INELIGIBLE).filter(created_at__lte=at)
        counts = dict(
            eligible.values_list("referrer_id").annotate(n=Count("id")).filter(n__gte=program.gate_min_referrals)
            .values_list("referrer_id", "n")
        )
        if not counts:
            continue
        min_spend = int(program.gate_min_spend * 10**10)
        spend = dict(
            Event.objects.filter(type=ev.USAGE_CHARGED, occurred_at__lte=at,
                                 account__referred_by__in=eligible, account__referred_by__referrer_id__in=counts)
            .values_list("account__referred_by__referrer_id")
            .annotate(total=net_sum("amount", "refunded")).filter(total__gte=min_spend)
            .values_list("account__referred_by__referrer_id", "total")
        ) if min_spend else dict.fromkeys(counts, 0)
        before = Application.objects.filter(program=program).count()
        Application.objects.bulk_create(
            [Application(program=program, account_id=referrer_id, referrals_at_open=counts[referrer_id],
                         spend_at_open=int(total or 0), opened_at=at)
             for referrer_id, total in spend.items() if referrer_id in counts],
            ignore_conflicts=True,
        )
        # bulk_create with ignore_conflicts reports rows it did not insert; count instead.
        opened += Application.objects.filter(program=program).count() - before
    return {"applications_opened": opened}


def template_gates(at: datetime) -> dict:
    _, released = services.record_job_event(services.TEMPLATES_QUALIFIED, at=at, payload={})
    return {"accruals_released": released}


def _apply_template_gates(event: Event, replay: bool) -> int:
    at = event.occurred_at
    released = 0
    for program in Program.objects.filter(enabled=True, kind=Program.Kind.TEMPLATE_SHARE):
        min_seconds = int(program.template_min_runtime_hours * 3600)
        runtimes = (
            Event.objects.filter(type=ev.USAGE_CHARGED, occurred_at__lte=at, template__qualified_at__isnull=True)
            .values_list("template_id").annotate(seconds=Sum("runtime_seconds"))
            .filter(seconds__gte=min_seconds).values_list("template_id", flat=True)
        )
        for template in Template.objects.filter(pk__in=list(runtimes)).select_for_update():
            # +1 so a template that qualifies with nothing held still counts as an effect.
            released += 1 + services._qualify_template(template, program, event=event, at=at)
    return released


def milestones(at: datetime) -> dict:
    _, awarded = services.record_job_event(services.MILESTONES_CAUGHT_UP, at=at, payload={})
    return {"milestones_awarded": awarded}


def _apply_milestones(event: Event, replay: bool) -> int:
    at = event.occurred_at
    awarded = 0
    for program in Program.objects.filter(enabled=True, kind=Program.Kind.MILESTONE):
        threshold = int(program.milestone_threshold * 10**10)
        if threshold <= 0:
            continue
        charges = Event.objects.filter(type__in=program.event_types, occurred_at__lte=at,
                                       account__referred_by__isnull=False)
        if program.product:
            charges = charges.filter(product=program.product)
        due = (
            charges.exclude(account__referred_by__milestones__program=program)
            .values_list("account__referred_by").annotate(net=net_sum("amount", "refunded"))
            .filter(net__gte=threshold).values_list("account__referred_by", flat=True)
        )
        for referral in Referral.objects.filter(pk__in=list(due)).select_for_update():
            earnings = services._award_milestone(program, referral, event)
            services._persist(earnings, event)
            awarded += bool(earnings)
    return awarded


def expire_credits(at: datetime) -> dict:
    _, expired = services.record_job_event(services.CREDITS_EXPIRED, at=at, payload={})
    return {"grants_expired": expired}


def _apply_credit_expiry(event: Event, replay: bool) -> int:
    at = event.occurred_at
    # Lock the lapsed grants first (PostgreSQL refuses FOR UPDATE with GROUP BY), so a
    # concurrent run waits and then finds them already expired.
    ids = list(CreditGrant.objects.filter(expires_at__lte=at, expired_at__isnull=True)
               .select_for_update().values_list("id", flat=True))
    lapsed = CreditGrant.objects.filter(pk__in=ids, expired_at__isnull=True)
    rows = list(lapsed.filter(remaining__gt=0).values_list("account_id", "accrual__program_id")
                .annotate(total=Sum("remaining")))
    legs = []
    for account_id, program_id, total in rows:
        legs += [Leg(Book.CREDITS, -int(total), account_id, program_id),
                 Leg(Book.EXPIRED, int(total), None, program_id)]
    post(kind="expiry", rule="signup-credit:expired", event=event, legs=legs)
    return lapsed.update(remaining=0, expired_at=at)


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


class UnknownJob(ValueError):
    pass


def run_jobs(*, at: datetime | None = None, names: list[str] | None = None) -> dict[str, dict]:
    """Run the named jobs (all by default) as of `at`, recording a JobRun for each."""
    at = at or timezone.now()
    names = list(names or JOBS)
    unknown = [n for n in names if n not in JOBS]
    if unknown:
        raise UnknownJob(f"unknown job(s): {', '.join(unknown)}; known: {', '.join(JOBS)}")
    results = {}
    for name in names:
        run = JobRun.objects.create(name=name, at=at)
        try:
            with transaction.atomic():
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
