#!/usr/bin/env bash
# `make test`: the whole suite, exactly as CI runs it, on any machine.
#
# Provisions what the suite needs where it is missing: Debian's redis-server (the Celery and
# cache tests start their own on a free port), Debian's Chromium (the browser tests drive it
# through Playwright, which never downloads a browser), and a throwaway PostgreSQL cluster
# (scripts/pg-throwaway.sh) unless TEST_DATABASE_URL already names one. Installing needs root
# and apt-get; without them a missing part is reported here and its tests skip with a reason.
#
# Then it runs pytest on SQLite and on PostgreSQL (both runs always happen, so one database's
# failures don't hide the other's) and ends with one summary line per run and a total.
set -uo pipefail

cd "$(dirname "$0")/.."
MAKE=${MAKE:-make}
log_dir=$(mktemp -d /tmp/referrals-test.XXXXXX)
pg_dir=""
missing=()

cleanup() {
    if [[ -n $pg_dir ]]; then bash scripts/pg-throwaway.sh stop "$pg_dir" >/dev/null 2>&1 || true; fi
    rm -rf "$log_dir"
}
trap cleanup EXIT

can_install() { [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; }

apt_updated=""
apt_install() {
    if [[ -z $apt_updated ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >"$log_dir/apt.log" 2>&1 \
        || { tail -20 "$log_dir/apt.log"; return 1; }
}

if ! command -v redis-server >/dev/null; then
    if can_install; then
        echo "==> installing redis-server (Debian)"
        apt_install redis-server
        # The package starts its own service; the tests run redis-server themselves.
        service redis-server stop >/dev/null 2>&1 || true
    else
        missing+=("redis-server: not installed and not root, so the Redis/Celery tests skip")
    fi
fi

if [[ ! -x /usr/bin/chromium ]]; then
    if can_install; then
        echo "==> installing chromium (Debian)"
        apt_install chromium
    else
        missing+=("chromium: /usr/bin/chromium missing and not root, so the browser tests skip")
    fi
fi

if [[ -z ${TEST_DATABASE_URL:-} ]]; then
    echo "==> starting a throwaway PostgreSQL (scripts/pg-throwaway.sh)"
    pg_dir=$(mktemp -d /tmp/referrals-pg.XXXXXX)
    if url=$(bash scripts/pg-throwaway.sh start "$pg_dir"); then
        export TEST_DATABASE_URL=$url
    else
        rm -rf "$pg_dir"
        pg_dir=""
        missing+=("PostgreSQL: no server binaries and none could be installed, so the PostgreSQL run is skipped")
    fi
fi

status=0
$MAKE --no-print-directory test-sqlite 2>&1 | tee "$log_dir/sqlite.log"
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
runs=(sqlite)
if [[ -n ${TEST_DATABASE_URL:-} ]]; then
    $MAKE --no-print-directory test-postgres 2>&1 | tee "$log_dir/postgresql.log"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
    runs+=(postgresql)
fi

# pytest's closing line of each run, e.g. "==== 3 failed, 680 passed, 15 skipped in 412.1s ====".
count() { grep -Eo "[0-9]+ $1" <<<"$2" | grep -Eo '^[0-9]+' || echo 0; }
total_passed=0 total_failed=0 total_skipped=0
echo "==> summary"
for run in "${runs[@]}"; do
    line=$(grep -E '[0-9]+ (passed|failed|skipped|errors?|deselected).* in [0-9.]+s' "$log_dir/$run.log" | tail -1)
    if [[ -z $line ]]; then
        echo "$run: no pytest summary (the run did not finish)"
        status=1
        continue
    fi
    passed=$(count passed "$line") failed=$(count failed "$line") skipped=$(count skipped "$line")
    errors=$(count 'errors?' "$line")
    failed=$((failed + errors))
    echo "$run: $passed passed, $failed failed, $skipped skipped"
    total_passed=$((total_passed + passed)) total_failed=$((total_failed + failed))
    total_skipped=$((total_skipped + skipped))
done
for reason in "${missing[@]}"; do echo "not provisioned: $reason"; done
echo "total: $total_passed passed, $total_failed failed, $total_skipped skipped"
exit "$status"
