"""Applied sign-ups/s: a stored batch of 1,000 `account.created` events applied by
`ingestion.apply_pending()`, set-based (`referrals.engine.signups`) and, in the same run, one by one
through the step as before (the engine's sign-up run switched off), on PostgreSQL. Printed end to
end (the apply's transaction and the outbox messages delivered after its commit to the
subscribed consumers) and inside the engine (`engine.apply_events`), with the queries of both.

    DATABASE_URL=postgres://... .venv/bin/python bench/signups.py [--rounds 3] [--referrers 50] [--with-clicks 0.5]

The database must be a scratch one (e.g. `scripts/pg-throwaway.sh start DIR`): the script
migrates it, loads the `apimarket` preset (a $2.50 sign-up credit for referred accounts),
signs up `--referrers` referrers through ingestion, then per round stores 1,000 sign-ups
(outside the timing): each referred by a referrer's code, one in ten from its referrer's IP
(flagged same_ip), one in twenty with an unknown code (accepted with a warning). With
`--with-clicks SHARE`, that share of them also names a click on its referrer's link (written
before the round, outside the timing; half by row id, half by public id), one in four of those
without the code (attributed by the click alone), one in ten naming the click of an earlier one
(flagged shared_click). The two ways alternate round by round on fresh sign-ups, so both see the
same table sizes and machine noise.
Finally the ledger is checked (balanced, projection equal to the entries, pending = held).
"""
import argparse
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "referrals_site.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from referrals.engine import apply as engine  # noqa: E402
from referrals.engine import events as ev  # noqa: E402
from referrals.engine.ingestion import apply_pending, ingest_event  # noqa: E402
from referrals.engine.verification import check_integrity  # noqa: E402
from referrals.models import Account, Click, Event, Referral  # noqa: E402
from referrals.presets import load_preset  # noqa: E402

BATCH = 1000
START = datetime(2026, 1, 1, tzinfo=UTC)


def store_batch(tag: str, referrers: list[Account], rng: random.Random, with_clicks: float = 0.0) -> list[int]:
    rows = []
    named: list[tuple[Account, str]] = []  # (referrer, click id) of the sign-ups with a click so far
    for n in range(BATCH):
        referrer = rng.choice(referrers)
        occurred_at = START + timedelta(days=1, seconds=n)
        raw = {"id": f"{tag}-{n}", "type": ev.ACCOUNT_CREATED, "account": f"{tag}-{n}",
               "occurred_at": occurred_at.isoformat(), "email": f"{tag}-{n}@example.com",
               "referral_code": "zzzz0000" if n % 20 == 7 else referrer.referral_code,
               "ip": referrer.signup_ip if n % 10 == 3 else f"198.51.{n % 200}.{n % 250}"}
        if rng.random() < with_clicks:
            if named and rng.random() < 0.1:
                referrer, click_id = rng.choice(named)  # a click that brought a sign-up already
            else:
                click = Click.objects.create(referrer=referrer, visitor_id=uuid.uuid4().hex,
                                             created_at=occurred_at - timedelta(minutes=5))
                click_id = str(click.pk) if rng.random() < 0.5 else str(click.public_id)
                named.append((referrer, click_id))
            raw["click_id"] = click_id
            raw["referral_code"] = referrer.referral_code
            if rng.random() < 0.25:
                del raw["referral_code"]
        valid = ev.validate_event(raw, now=START + timedelta(days=30))
        rows.append(Event(external_id=valid.external_id, type=valid.type, occurred_at=valid.occurred_at,
                          payload=valid.raw, content_hash=valid.content_hash, warnings=valid.warnings or None,
                          applied_at=None))
    return [event.pk for event in Event.objects.bulk_create(rows)]


def apply(ids: list[int], *, set_based: bool) -> tuple[float, float, int]:
    """Seconds for the whole apply (the transaction, and its outbox messages delivered after
    commit to the subscribed consumers), seconds inside the engine, and the queries of both."""
    original_apply = engine.apply_events
    run = engine._RUNS.pop(ev.ACCOUNT_CREATED) if not set_based else None  # every sign-up through its step
    queries, in_engine = 0, 0.0

    def timed(*args, **kwargs):
        nonlocal in_engine
        began = time.perf_counter()
        try:
            return original_apply(*args, **kwargs)
        finally:
            in_engine += time.perf_counter() - began

    engine.apply_events = timed  # ingestion calls it as engine.apply_events

    def count(execute, sql, params, many, context):
        nonlocal queries
        queries += 1
        return execute(sql, params, many, context)

    try:
        with connection.execute_wrapper(count):
            began = time.perf_counter()
            applied = apply_pending(event_ids=ids)
            elapsed = time.perf_counter() - began
    finally:
        engine.apply_events = original_apply
        if run is not None:
            engine._RUNS[ev.ACCOUNT_CREATED] = run
    assert applied == BATCH, applied
    return elapsed, in_engine, queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--referrers", type=int, default=50)
    parser.add_argument("--with-clicks", type=float, default=0.0, metavar="SHARE",
                        help="share of the sign-ups that name a click on their referrer's link (0 to 1)")
    parser.add_argument("--profile", action="store_true", help="cProfile one more set-based batch (top 25)")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("bench/signups.py measures PostgreSQL: set DATABASE_URL to a scratch database")
    call_command("migrate", verbosity=0)
    load_preset("apimarket")
    run = uuid.uuid4().hex[:6]
    for n in range(args.referrers):
        result = ingest_event({"id": f"{run}-ref-{n}", "type": ev.ACCOUNT_CREATED, "account": f"{run}-ref-{n}",
                               "occurred_at": START.isoformat(), "email": f"{run}-ref-{n}@example.org",
                               "ip": f"203.0.{n // 250}.{n % 250}"}, now=START + timedelta(days=30))
        assert result.status == "accepted", result.as_dict()
    referrers = list(Account.objects.filter(external_id__startswith=f"{run}-ref-"))
    rng = random.Random(13)
    figures: dict[str, list[tuple[float, float, int]]] = {"step": [], "set-based": []}
    for round_ in range(args.rounds):
        for way in ("step", "set-based"):
            ids = store_batch(f"{run}-{way}-{round_}", referrers, rng, args.with_clicks)
            figures[way].append(apply(ids, set_based=way == "set-based"))
    ours = Referral.objects.filter(referred__external_id__startswith=run)
    flagged = ours.filter(status=Referral.Status.INELIGIBLE).count()
    problems = check_integrity()
    print(f"{args.rounds} rounds of {BATCH} sign-ups per way ({flagged} referrals flagged in all, "
          f"{ours.filter(click__isnull=False).count()} attributed through a click), "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for way, rows in figures.items():
        rates = [BATCH / elapsed for elapsed, _, _ in rows]
        engine_rates = [BATCH / in_engine for _, in_engine, _ in rows]
        print(f"  {way:>9}: {statistics.median(rates):6.0f} sign-ups/s applied end to end (rounds "
              f"{', '.join(f'{r:.0f}' for r in rates)}); {statistics.median(engine_rates):6.0f}/s inside the engine "
              f"(rounds {', '.join(f'{r:.0f}' for r in engine_rates)}); {rows[0][2]} queries per batch")
    for label, index in (("end to end", 0), ("inside the engine", 1)):
        step, set_based = (statistics.median(BATCH / row[index] for row in figures[w]) for w in ("step", "set-based"))
        print(f"  set-based / step, {label}: {set_based / step:.1f}x")
    print("  ledger:", "consistent" if not problems else problems[:5])
    if args.profile:
        import cProfile
        import pstats

        ids = store_batch(f"{run}-profile", referrers, rng, args.with_clicks)
        profile = cProfile.Profile()
        profile.runcall(apply, ids, set_based=True)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
