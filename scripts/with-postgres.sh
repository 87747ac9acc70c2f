#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL cluster: installs Debian's postgresql package when
# missing, creates a cluster in a temp dir as an unprivileged user, starts it on a free loopback
# port, exports TALLY_TEST_POSTGRES_URL for the command, and stops and deletes the cluster on exit.
#
#   scripts/with-postgres.sh cargo test -p tally-store
#
# The cluster runs with fsync=off (tests need no durability); TALLY_PG_FSYNC=on turns it on (for
# benchmarks whose figures should include PostgreSQL's WAL flushes).
set -euo pipefail

find_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

PG_BIN="$(find_bin || true)"
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    echo "with-postgres: installing PostgreSQL from Debian's packages" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    PG_BIN="$(find_bin)"
fi

# initdb refuses to run as root: run the cluster as an unprivileged user.
RUN_AS=()
PG_USER="$(id -un)"
if [ "$(id -u)" -eq 0 ]; then
    PG_USER="${TALLY_PG_OS_USER:-postgres}"
    if ! id "$PG_USER" >/dev/null 2>&1; then
        PG_USER=nobody
    fi
    RUN_AS=(runuser -u "$PG_USER" --)
fi

PG_DIR="$(mktemp -d /tmp/tally-pg.XXXXXX)"
chmod 755 "$PG_DIR"
if [ "${#RUN_AS[@]}" -gt 0 ]; then chown "$PG_USER" "$PG_DIR"; fi

# A free loopback port: nothing answers a connection attempt on it.
free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}
PORT="$(free_port)"

cleanup() {
    "${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
}
trap cleanup EXIT INT TERM

"${RUN_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U tally --auth=trust -E UTF8 >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; exit 1; }
"${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $PORT -k $PG_DIR -c fsync=${TALLY_PG_FSYNC:-off} -c max_connections=300" start >/dev/null \
    || { cat "$PG_DIR/server.log" >&2; exit 1; }

export TALLY_TEST_POSTGRES_URL="postgres://tally@127.0.0.1:$PORT/postgres"
echo "with-postgres: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT" >&2
"$@"
