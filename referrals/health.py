"""`GET /health/`: can this deployment serve, and is its background work flowing?

JSON, no authentication, nothing secret in it:

    {"status": "ok" | "degraded" | "down",
     "checks": {"database": {"ok": true},
                "broker": {"ok": false, "mode": "redis", "error": "..."},
                "events": {"ok": true, "unapplied": 0, "oldest_unapplied_age_seconds": 0.0}}}

HTTP 200 while the database answers — the portal serves and the API accepts events, even with
the broker down ("degraded": queued work waits and is retried when Redis is back). HTTP 503 when
the database is down ("down"). `checks.events` says how far applying accepted events is behind:
how many are stored and not applied yet (counted up to 10,001) and how old the oldest one is;
`ok` turns false (status "degraded") once that age passes `HEALTH_MAX_APPLY_LAG` seconds (60 by
default; the sweeper on beat catches up within seconds of a crash). Monitoring alerts on
`checks.broker.ok` and `checks.events.ok`; a load balancer uses the status code.
"""
import logging

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from referrals_site.celery import app

from .engine import sweeper

log = logging.getLogger(__name__)


def _database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        log.warning("health: database unreachable: %s", exc)
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True}


def _broker() -> dict:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return {"ok": True, "mode": "embedded"}
    mode = app.conf.broker_url.split(":", 1)[0]
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            conn.default_channel  # noqa: B018 - opening a channel proves the broker answers
    except Exception as exc:
        log.warning("health: broker unreachable: %s", exc)
        return {"ok": False, "mode": mode, "error": f"{type(exc).__name__}: {exc}"[:200]}
    return {"ok": True, "mode": mode}


def _events() -> dict:
    try:
        lag = sweeper.lag()
    except Exception as exc:
        log.warning("health: could not read the apply lag: %s", exc)
        return {"ok": False, "error": type(exc).__name__}
    limit = getattr(settings, "HEALTH_MAX_APPLY_LAG", 60)
    return {"ok": lag["oldest_unapplied_age_seconds"] <= limit, **lag}


@never_cache
@require_GET
def health(request):
    checks = {"database": _database(), "broker": _broker()}
    checks["events"] = _events() if checks["database"]["ok"] else {"ok": False, "error": "database down"}
    if not checks["database"]["ok"]:
        status = "down"
    elif not all(check["ok"] for check in checks.values()):
        status = "degraded"
    else:
        status = "ok"
    return JsonResponse({"status": status, "checks": checks}, status=503 if status == "down" else 200)
