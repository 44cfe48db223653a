"""Throughput and latency of the referral click (`/?ref=CODE` → 302) next to a bare Django view
behind the same middleware, on the same gunicorn server in the same run.

    .venv/bin/python bench/clicks.py [--seconds 10] [--connections 16] [--database-url URL]

Needs `wrk` (Debian package) and gunicorn. Prints requests/s, p50 and p99 latency for both and
their ratios. Targets (issue 9): click throughput >= 0.9 x bare, click p99 < 30 ms at 16 connections.

Every wrk request is a new visitor (wrk keeps no cookies), so every click is a unique click with a
row to write. After the run the server is stopped with SIGTERM and the script counts the clicks in
the database against the click answers wrk received: the buffered writer must lose none.
Extra gunicorn settings through the environment, e.g. REFERRAL_CLICK_WRITE=direct for the old path.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_wrk(url: str, seconds: int, connections: int) -> dict:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))

    def ms(label):
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": ms("50"), "p99": ms("99"), "total": total,
            "errors": int(non2xx.group(1)) if non2xx else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")

    workdir = tempfile.mkdtemp(prefix="bench-clicks-")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.bench_settings", "PYTHONPATH": str(ROOT),
           "DATABASE_URL": args.database_url or f"sqlite:///{workdir}/bench.sqlite3"}
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    code = subprocess.run(
        [python, "-c", "import django; django.setup(); from referrals.models import Account; "
         "from django.utils import timezone; a, _ = Account.objects.get_or_create(external_id='bench-referrer', "
         "defaults={'signed_up_at': timezone.now()}); print(a.referral_code)"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout.strip()

    port = free_port()
    server = subprocess.Popen(
        [str(Path(python).parent / "gunicorn"), "referrals_site.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--threads", "1", "--log-level", "warning"],
        cwd=ROOT, env=env, start_new_session=True)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/__bare__/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        base = f"http://127.0.0.1:{port}"
        run_wrk(f"{base}/__bare__/", 2, args.connections)  # warm-up
        warm = run_wrk(f"{base}/?ref={code}", 2, args.connections)
        load_before = os.getloadavg()
        bare = run_wrk(f"{base}/__bare__/", args.seconds, args.connections)
        click = run_wrk(f"{base}/?ref={code}", args.seconds, args.connections)
        load_after = os.getloadavg()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    try:
        rows = int(subprocess.run(
            [python, "-c", "import django; django.setup(); from referrals.models import Click; "
             "print(Click.objects.count())"], cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    db = "postgresql" if (args.database_url or "").startswith("postgres") else "sqlite"
    print(f"database: {db}; gunicorn 1 worker, 1 thread; wrk {args.connections} connections, {args.seconds}s each; "
          f"click write: {os.environ.get('REFERRAL_CLICK_WRITE', 'buffered')}; {os.cpu_count()} CPUs; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"{'':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, r in (("bare", bare), ("click", click)):
        print(f"{name:8} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['errors']:7d}")
    print(f"ratio click/bare throughput: {click['rps'] / bare['rps']:.2f} (target >= 0.90); "
          f"click p99 {click['p99']:.1f} ms (target < 30 ms)")
    answered = warm["total"] + click["total"] - warm["errors"] - click["errors"]
    print(f"clicks answered {answered}, rows in the database after SIGTERM {rows}: "
          f"{'none lost' if rows >= answered else f'{answered - rows} LOST'}")


if __name__ == "__main__":
    main()
