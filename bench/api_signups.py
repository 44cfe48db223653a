"""Sign-ups/s through the API's ingestion (`ingestion.ingest_batch`, what `POST /api/v1/events`
calls): a batch of 1,000 `account.created` stored and applied in one transaction, set-based,
next to the same kind of sign-ups sent one per call (the synchronous path each lone event
takes), in the same run, on PostgreSQL. Each is referred by one referrer's code; the queries of
both are counted.

    DATABASE_URL=postgres://... .venv/bin/python bench/api_signups.py [--rounds 2] [--singles 200]

The database must be a scratch one: the script migrates it and loads the `apimarket` preset
(a $2.50 sign-up credit for referred accounts).
"""
import argparse
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "referrals_site.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from referrals.engine.ingestion import ingest_batch  # noqa: E402
from referrals.engine.verification import check_integrity  # noqa: E402
from referrals.models import Account  # noqa: E402
from referrals.presets import load_preset  # noqa: E402


def sign_ups(prefix: str, code: str, n: int) -> list[dict]:
    return [{"id": f"{prefix}-{i}", "type": "account.created", "account": f"{prefix}-{i}",
             "occurred_at": "2026-01-02T00:00:00+00:00", "email": f"{prefix}-{i}@example.com", "referral_code": code}
            for i in range(n)]


def timed(batches: list[list[dict]]) -> tuple[float, int]:
    queries = 0
    started = time.perf_counter()
    for batch in batches:
        with CaptureQueriesContext(connection) as captured:
            results = ingest_batch(batch)
        queries += len(captured)
        assert all(result.status == "accepted" for result in results), \
            [result.as_dict() for result in results if result.status != "accepted"][:3]
    return time.perf_counter() - started, queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--singles", type=int, default=200, help="sign-ups sent one per call per round")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("bench/api_signups.py measures PostgreSQL: set DATABASE_URL=postgres://... (a scratch database)")
    call_command("migrate", verbosity=0)
    load_preset("apimarket")
    tag = uuid.uuid4().hex[:8]
    ingest_batch([{"id": f"{tag}-ref", "type": "account.created", "account": f"{tag}-ref",
                   "occurred_at": "2026-01-01T00:00:00+00:00", "email": f"{tag}-ref@example.com"}])
    code = Account.objects.get(external_id=f"{tag}-ref").referral_code
    print(f"PostgreSQL {connection.pg_version}, load {os.getloadavg()}")
    for number in range(1, args.rounds + 1):
        seconds, queries = timed([sign_ups(f"{tag}-b{number}", code, 1000)])
        print(f"round {number}  one batch of 1000: {1000 / seconds:8,.0f} sign-ups/s  "
              f"{queries / 1000:6.2f} queries each")
        singles = sign_ups(f"{tag}-s{number}", code, args.singles)
        seconds, queries = timed([[raw] for raw in singles])
        print(f"round {number}  one per call ({args.singles}): {args.singles / seconds:8,.0f} sign-ups/s  "
              f"{queries / args.singles:6.2f} queries each")
    problems = check_integrity()
    assert problems == [], problems[:5]


if __name__ == "__main__":
    main()
