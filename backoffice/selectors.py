"""What the staff overview on the admin index shows: work waiting and recent earnings."""
from datetime import timedelta

from django.apps import apps
from django.db.models import Count, Sum
from django.utils import timezone

from ledger.money import format_cents
from referrals.models import Accrual, Application, FraudFlag, JobRun


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
        "earnings": [{"program": row["program__name"], "total": format_cents(row["total"]), "count": row["n"],
                      "percent": round(100 * int(row["total"]) / top) if top else 0} for row in earnings],
        "payouts_due": None,
    }
    try:
        payout_model = apps.get_model("payouts", "Payout")
    except LookupError:  # the payouts app has no Payout model in this deployment
        return overview
    due = (payout_model.objects.filter(status__in=["requested", "approved"])
           .aggregate(n=Count("id"), total=Sum("amount")))
    overview["payouts_due"] = {"count": due["n"], "total": format_cents(due["total"] or 0)}
    return overview
