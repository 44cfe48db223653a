"""Reads for the staff desks: the overview on the admin index, and what a reviewer needs to see
next to an application or a payout (the account's figures, history and fraud flags)."""
from datetime import timedelta

from django.apps import apps
from django.db.models import Count, Q, Sum
from django.utils import timezone

from referrals.models import Accrual, Application, FraudFlag, JobRun, Program, Referral
from referrals.portal.dashboard import pays_cash
from referrals.selectors import (
    FIGURES,
    account_balances,
    earnings_by_program,
    earnings_totals,
    gate_progress,
    referral_stats,
)
from referrals.templatetags.figures import money_text


def staff_overview(*, now=None) -> dict:
    now = now or timezone.now()
    since = now - timedelta(days=30)
    earnings = list(
        Accrual.objects.filter(created_at__gte=since).exclude(state=Accrual.State.VOID)
        .values("program__name").annotate(total=Sum("amount"), n=Count("id")).order_by("-total")
    )
    top = max((int(row["total"]) for row in earnings), default=0)
    overview = {
        "open_applications": Application.objects.filter(status=Application.Status.OPEN).count(),
        "open_fraud_flags": FraudFlag.objects.filter(status=FraudFlag.Status.OPEN).count(),
        "failed_jobs": list(JobRun.objects.exclude(error="").filter(started_at__gte=now - timedelta(days=7))
                            .values("name", "at", "error")[:5]),
        "earnings": [{"program": row["program__name"], "total": money_text(row["total"]), "count": row["n"],
                      "percent": round(100 * int(row["total"]) / top) if top else 0} for row in earnings],
        "payouts_due": None,
    }
    try:
        payout_model = apps.get_model("payouts", "Payout")
    except LookupError:  # the payouts app has no Payout model in this deployment
        return overview
    due = (payout_model.objects.filter(status__in=["requested", "approved"])
           .aggregate(n=Count("id"), total=Sum("amount"),
                      second=Count("id", filter=Q(status="requested", first_approved_at__isnull=False))))
    overview["payouts_due"] = {"count": due["n"], "total": money_text(due["total"] or 0),
                               "awaiting_second_approval": due["second"]}
    return overview


def flags_concerning(account) -> Q:
    """Fraud flags about an account (an Account, its id, or an OuterRef): on referrals it made or
    came through, and on the account itself (a payout destination shared with another account)."""
    return Q(referral__referrer=account) | Q(referral__referred=account) | Q(account=account)


def account_flags(account) -> list[dict]:
    flags = (FraudFlag.objects.filter(flags_concerning(account))
             .select_related("referral__referrer", "referral__referred", "account", "decided_by").order_by("-id")[:20])
    return [{"id": flag.pk, "status": flag.get_status_display(), "created_at": flag.created_at,
             "referral": (f"{flag.referral.referrer.external_id} → {flag.referral.referred.external_id}"
                          if flag.referral_id else f"account {flag.account.external_id}"),
             "signals": [(s.get("signal", "?"), s.get("detail", "")) for s in flag.signals],
             "decided_by": flag.decided_by.get_username() if flag.decided_by else "", "reason": flag.reason}
            for flag in flags]


def account_summary(account, *, now=None) -> dict:
    """Who the account is and what it holds: age, balances, earnings per programme, referrals."""
    now = now or timezone.now()
    balances = account_balances(account)
    stats = referral_stats(account)
    earnings = earnings_by_program(account)
    totals = earnings_totals(earnings)
    cash = {"Cash available for payouts": balances.cash_available,
            "Cash blocked by own purchased credits": balances.cash_blocked,
            "Reserved for payouts in progress": totals["reserved"]}
    credits_only = not pays_cash(Program.objects.filter(enabled=True))
    if credits_only:  # rows of $0.00 cash would read as "owed nothing yet"; say why there is none
        cash = {label: units for label, units in cash.items() if units}
    return {
        "account": account,
        "age_days": (now - account.signed_up_at).days,
        "balances": {**{label: money_text(units) for label, units in cash.items()},
                     "Platform credits": money_text(balances.credits),
                     "Held (pending) earnings": money_text(balances.pending)},
        "cash_note": ("No cash: every enabled programme pays in platform credits, which are used on the "
                      "platform and cannot be withdrawn." if credits_only else ""),
        "earnings": [{**row, **{k: money_text(row[k]) for k in FIGURES}} for row in earnings],
        "earnings_total": {k: money_text(v) for k, v in totals.items()} if len(earnings) > 1 else None,
        "referrals": stats["total_referrals"],
        "conversions": stats["conversions"],
        "ineligible": Referral.objects.filter(referrer=account, status=Referral.Status.INELIGIBLE).count(),
        "flags": account_flags(account),
    }


def payout_review(payout) -> dict:
    """Everything the payouts desk shows beside one payout: the account and its payout history."""
    others = type(payout).objects.filter(account_id=payout.account_id).exclude(pk=payout.pk)
    totals = {row["status"]: row for row in others.values("status").annotate(n=Count("id"), total=Sum("amount"))
              .order_by()}
    return {
        **account_summary(payout.account),
        "history": [{"pk": other.pk, "amount": money_text(other.amount), "method": other.get_method_type_display(),
                     "status": other.get_status_display(), "requested_at": other.requested_at}
                    for other in others.order_by("-id")[:10]],
        "history_totals": [{"status": status, "count": row["n"], "total": money_text(row["total"] or 0)}
                           for status, row in sorted(totals.items())],
    }


def application_review(application) -> dict:
    """The figures that justify (or not) an application: the gate, now and when it was opened."""
    progress = gate_progress(application.account, application.program)
    held = (Accrual.objects.filter(program=application.program, beneficiary=application.account,
                                   state=Accrual.State.HELD).aggregate(total=Sum("amount"), reversed=Sum("reversed")))
    return {
        **account_summary(application.account),
        "gate": {"referrals": progress["referrals"], "referrals_needed": progress["referrals_needed"],
                 "spend": money_text(progress["spend"]), "spend_needed": money_text(progress["spend_needed"]),
                 "referrals_at_open": application.referrals_at_open,
                 "spend_at_open": money_text(application.spend_at_open)},
        "held_in_program": money_text(int(held["total"] or 0) - int(held["reversed"] or 0)),
    }
