"""Throughput and latency of the referral click (`/?ref=CODE` → 302) next to a bare Django view
behind the same middleware, on the same gunicorn server in the same run.

    .venv/bin/python bench/clicks.py [--seconds 10] [--rounds 3] [--connections 16] [--threads 1]
                                     [--database-url URL] [--profile DIR]

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
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIDDLEWARE_LAST = bool(os.environ.get("BENCH_REFERRAL_MIDDLEWARE_LAST"))  # see bench_settings.py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_clicks(python: str, env: dict) -> int:
    return int(
        subprocess.run(
            [
                python,
                "-c",
                "import django; django.setup(); from referrals.models import Click; print(Click.objects.count())",
            ],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )


def run_wrk(url: str, seconds: int, connections: int, worker: int | None = None) -> dict:
    cpu_before = cpu_seconds(worker) if worker else 0.0
    out = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = cpu_seconds(worker) - cpu_before if worker else 0.0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))

    def ms(label):
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": ms("50"),
        "p99": ms("99"),
        "total": total,
        "errors": int(non2xx.group(1)) if non2xx else 0,
        "cpu_ms": cpu * 1000 / max(total, 1),
    }


# Where a sample's time goes: the first rule its stack matches (py-spy's collapsed stacks, leaf last).
WAITING_CALLS = ("write", "write_chunk", "close_graceful", "socket.accept", "sendall", "recv", "SyncWorker.wait")


def categorize(stack: str) -> str:
    leaf = stack.rsplit(";", 1)[-1].split(" (")[0]
    if "(referrals/attribution/clicks.py" in stack and ("Condition.wait (" in stack or "._commit (" in stack):
        return "click writer thread: waiting (its timer; the COMMIT, GIL released)"
    if "(referrals/attribution/clicks.py" in stack and "follow_referral_link (" not in stack:
        return "click writer thread: building rows, INSERT"
    if "follow_referral_link (" in stack:
        return "follow_referral_link (the click's own code)"
    if "django/core/handlers/" in stack:
        return "Django: handler, middleware, URL resolution, view"
    if "gunicorn/" in stack and leaf in WAITING_CALLS:
        return "gunicorn: socket syscalls (send, graceful close, accept)"
    if "gunicorn/" in stack:
        return "gunicorn: parse the request, build environ and headers"
    return "other"


def profile_run(url: str, args, worker: int, name: str) -> dict:
    """Run wrk again with py-spy sampling the worker; summarise where its CPU time went."""
    out = Path(args.profile) / f"{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(worker),
            "--duration",
            str(args.seconds),
            "--rate",
            "250",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    result = run_wrk(url, args.seconds, args.connections)
    spy.wait(timeout=args.seconds + 30)
    totals, children = {}, {}
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        category = categorize(stack)
        totals[category] = totals.get(category, 0) + n
        if category.startswith("follow_referral_link"):
            below = stack.split("follow_referral_link (", 1)[1].split(";")
            child = below[1].split(" (")[0] if len(below) > 1 else "(its own lines)"
            children[child] = children.get(child, 0) + n
    return {"answered": result["total"], "totals": totals, "children": children, "samples": sum(totals.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="bare and click runs, alternating")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="gunicorn threads: 1 is the sync worker (a connection per request), more the gthread worker (keep-alive)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="then run both again under py-spy (PyPI) and print where the worker's time goes",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")

    workdir = tempfile.mkdtemp(prefix="bench-clicks-")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.bench_settings",
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": args.database_url or f"sqlite:///{workdir}/bench.sqlite3",
    }
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    code = subprocess.run(
        [
            python,
            "-c",
            "import django; django.setup(); from referrals.models import Account; "
            "from django.utils import timezone; a, _ = Account.objects.get_or_create(external_id='bench-referrer', "
            "defaults={'signed_up_at': timezone.now()}); print(a.referral_code)",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()

    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(python).parent / "gunicorn"),
            "referrals_site.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            str(args.threads),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    before = count_clicks(python, env)
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
        worker = int(
            subprocess.run(
                ["ps", "-o", "pid=", "--ppid", str(server.pid)], capture_output=True, text=True, check=True
            ).stdout.split()[0]
        )
        load_before = os.getloadavg()
        # Bare and click alternate, so a burst of load from elsewhere on the machine hits both.
        rounds = []
        for _ in range(args.rounds):
            bare = run_wrk(f"{base}/__bare__/", args.seconds, args.connections, worker=worker)
            click = run_wrk(f"{base}/?ref={code}", args.seconds, args.connections, worker=worker)
            rounds.append((bare, click))
        load_after = os.getloadavg()
        profiles = {}
        if args.profile:
            for name, url in (("bare", f"{base}/__bare__/"), ("click", f"{base}/?ref={code}")):
                profiles[name] = profile_run(url, args, worker, name)
                warm["total"] += profiles[name]["answered"] if name == "click" else 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    try:
        rows = count_clicks(python, env) - before
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    worker_kind = "sync worker" if args.threads == 1 else f"gthread worker with {args.threads} threads"
    db = "postgresql" if (args.database_url or "").startswith("postgres") else "sqlite"
    print(
        f"database: {db}; gunicorn 1 worker, {worker_kind}; wrk {args.connections} connections, {args.seconds}s each; "
        f"click write: {os.environ.get('REFERRAL_CLICK_WRITE', 'buffered')}; referral middleware: "
        f"{'last (its place before issue 9)' if MIDDLEWARE_LAST else 'before sessions'}; "
        f"{os.cpu_count()} CPUs; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(f"{'':12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'worker CPU ms/req':>18}  ratio")
    for n, (bare, click) in enumerate(rounds, 1):
        for name, r in ((f"{n}: bare", bare), (f"{n}: click", click)):
            ratio = f"{click['rps'] / bare['rps']:.2f}" if r is click else ""
            print(
                f"{name:12} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['errors']:7d} "
                f"{r['cpu_ms']:18.2f}  {ratio}"
            )
    ratios = sorted(c["rps"] / b["rps"] for b, c in rounds)
    p99s = sorted(c["p99"] for _, c in rounds)
    cpu = sum(c["cpu_ms"] for _, c in rounds) / sum(b["cpu_ms"] for b, _ in rounds)
    print(
        f"median ratio click/bare throughput: {statistics.median(ratios):.2f} (target >= 0.90; rounds "
        f"{', '.join(f'{r:.2f}' for r in ratios)}); "
        f"median click p99 {statistics.median(p99s):.1f} ms (target < 30 ms); "
        f"worker CPU per click / per bare request: {cpu:.2f}"
    )
    for name, prof in profiles.items():
        print(f"py-spy, {name} (worker samples: {prof['samples']}):")
        for category, n in sorted(prof["totals"].items(), key=lambda kv: -kv[1]):
            print(f"  {100 * n / max(prof['samples'], 1):5.1f} %  {category}")
        for child, n in sorted(prof["children"].items(), key=lambda kv: -kv[1])[:8]:
            print(f"           {100 * n / max(prof['samples'], 1):5.1f} %  follow_referral_link -> {child}")
    answered = warm["total"] - warm["errors"] + sum(c["total"] - c["errors"] for _, c in rounds)
    print(
        f"clicks answered {answered}, rows in the database after SIGTERM {rows}: "
        f"{'none lost' if rows >= answered else f'{answered - rows} LOST'}"
    )


if __name__ == "__main__":
    main()
