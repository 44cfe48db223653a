#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the test suite: a fresh data directory, trust auth on
# 127.0.0.1 only, a free port, durability switched off. Nothing outside DIR is touched.
#
#   scripts/pg-throwaway.sh start DIR   # prints the database URL on stdout (logs go to stderr)
#   scripts/pg-throwaway.sh stop DIR    # stops the server and removes DIR
#
# DIR must not exist yet or be empty (e.g. from `mktemp -d`). Also written: DIR/url and
# DIR/env (`export TEST_DATABASE_URL=...`), so `. DIR/env` works from another shell.
#
# PostgreSQL refuses to run as root, so as root the server runs as the `postgres` OS user
# (created by Debian's packages, which are installed here if no server binaries are found).
# Environment: PG_BIN (directory holding initdb/pg_ctl), PG_DB_NAME (default `referrals`).
set -euo pipefail

log() { printf 'pg-throwaway: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

find_pg_bin() {
    if [[ -n "${PG_BIN:-}" ]]; then
        echo "$PG_BIN"; return
    fi
    local dir
    # Debian keeps server binaries off PATH, one directory per major version; take the newest.
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V -r); do
        [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]] && { echo "$dir"; return; }
    done
    if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        dirname "$(command -v initdb)"; return
    fi
    return 1
}

install_pg() {
    [[ $EUID -eq 0 ]] || die "no PostgreSQL server binaries found; install the postgresql package or set PG_BIN"
    command -v apt-get >/dev/null || die "no PostgreSQL server binaries found and no apt-get to install them"
    log "installing PostgreSQL server from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
}

# The OS user the server runs as: ourselves, unless we are root.
server_user() {
    if [[ $EUID -ne 0 ]]; then id -un; return; fi
    id -u postgres >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin postgres
    echo postgres
}

as_server_user() {
    if [[ $EUID -eq 0 ]]; then runuser -u "$SERVER_USER" -- "$@"; else "$@"; fi
}

free_port() {
    local python
    python=$(command -v python3 || command -v python) || { echo $((20000 + RANDOM % 20000)); return; }
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    local dir=$1 db=${PG_DB_NAME:-referrals}
    mkdir -p "$dir"
    [[ -z "$(ls -A "$dir")" ]] || die "$dir is not empty"
    dir=$(cd "$dir" && pwd)

    [[ -z "${PG_BIN:-}" || -x "$PG_BIN/initdb" ]] || die "PG_BIN=$PG_BIN has no initdb"
    local bin
    bin=$(find_pg_bin) || { install_pg; bin=$(find_pg_bin) || die "PostgreSQL still not found after install"; }
    SERVER_USER=$(server_user)
    if [[ $EUID -eq 0 ]]; then
        chown "$SERVER_USER" "$dir"
        # mktemp's 0700 under /tmp is fine; a path under /root would not be reachable by postgres.
        runuser -u "$SERVER_USER" -- test -w "$dir" || die "$dir is not writable by $SERVER_USER"
    fi

    log "initdb in $dir/data ($("$bin/postgres" --version))"
    as_server_user "$bin/initdb" --pgdata="$dir/data" --username=postgres --auth=trust \
        --encoding=UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; die "initdb failed"; }

    # Only loopback TCP and a socket inside DIR: no clash with a system cluster's socket.
    cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 120
EOF
    printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' >"$dir/data/pg_hba.conf"

    local port attempt
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        if as_server_user "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait --timeout=60 \
            -o "-p $port" start >/dev/null; then
            break
        fi
        log "start on port $port failed (attempt $attempt)"
        port=""
    done
    [[ -n "$port" ]] || { tail -n 20 "$dir/server.log" >&2 || true; die "could not start PostgreSQL"; }
    echo "$bin" >"$dir/bin"

    as_server_user "$bin/createdb" --host=127.0.0.1 --port="$port" --username=postgres "$db"
    local url="postgres://postgres@127.0.0.1:$port/$db"
    echo "$url" >"$dir/url"
    echo "export TEST_DATABASE_URL=$url" >"$dir/env"
    log "running on 127.0.0.1:$port (data in $dir, log $dir/server.log)"
    echo "$url"
}

stop() {
    local dir=$1
    [[ -d "$dir" ]] || return 0
    if [[ -f "$dir/bin" && -f "$dir/data/postmaster.pid" ]]; then
        local bin
        bin=$(cat "$dir/bin")
        SERVER_USER=$(stat -c %U "$dir/data")
        as_server_user "$bin/pg_ctl" --pgdata="$dir/data" --mode=immediate --wait stop >/dev/null 2>&1 \
            || log "pg_ctl stop failed; see $dir/server.log"
    fi
    rm -rf "$dir"
    log "stopped and removed $dir"
}

case "${1:-}" in
    start) [[ $# -eq 2 ]] || die "usage: $0 start DIR"; start "$2" ;;
    stop) [[ $# -eq 2 ]] || die "usage: $0 stop DIR"; stop "$2" ;;
    *) die "usage: $0 start DIR | stop DIR" ;;
esac
