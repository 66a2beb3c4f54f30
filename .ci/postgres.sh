# A throw-away PostgreSQL cluster for the tests that need a server database.
#
#   source .ci/postgres.sh     # start one (installs Debian's postgresql if it is missing)
#   python -m pytest -m postgres
#   nas_postgres_stop          # or leave the shell: it is stopped and removed at exit
#
# The cluster lives in a temporary folder (data, log and unix socket), listens on
# 127.0.0.1 on a free port, trusts local connections and runs with fsync off: it is for
# tests only and is deleted when stopped. Sourcing exports
#   NAS_TEST_POSTGRES_URL  postgresql+psycopg://postgres@127.0.0.1:PORT/nas_test
#   NAS_TEST_PG_CTL        its pg_ctl, NAS_TEST_PGDATA its data folder, and
#   NAS_TEST_PG_USER       the account that must run pg_ctl (empty: this one)
# so a test can restart the server (tests/conftest.py, restart_postgres).
# PostgreSQL refuses to run as root, so as root (CI) it runs as the `postgres` account.

_nas_pg_bindir() {
    # initdb and pg_ctl on PATH, else Debian's versioned folder (the newest version)
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"  # the real folder: createdb is there
        return 0
    fi
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$found" ] && [ -x "$found/pg_ctl" ] && echo "$found"
}

_nas_pg_as() {
    # run a command as the cluster's owner
    if [ -n "${NAS_TEST_PG_USER:-}" ]; then
        (cd / && runuser -u "$NAS_TEST_PG_USER" -- "$@")
    else
        "$@"
    fi
}

nas_postgres_stop() {
    if [ -n "${NAS_TEST_PGDATA:-}" ] && [ -d "$NAS_TEST_PGDATA" ]; then
        _nas_pg_as "$NAS_TEST_PG_CTL" -D "$NAS_TEST_PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$(dirname "$NAS_TEST_PGDATA")"
    fi
    unset NAS_TEST_POSTGRES_URL NAS_TEST_PG_CTL NAS_TEST_PGDATA NAS_TEST_PG_USER
}

nas_postgres_start() {
    local bindir dir port
    bindir=$(_nas_pg_bindir) || true
    if [ -z "$bindir" ]; then
        echo "postgres.sh: initdb/pg_ctl not found; installing Debian's postgresql" >&2
        sudo -n apt-get install -y --no-install-recommends postgresql >&2 \
            || apt-get install -y --no-install-recommends postgresql >&2 \
            || { apt-get update >&2 && apt-get install -y --no-install-recommends postgresql >&2; } \
            || true
        bindir=$(_nas_pg_bindir) || true
    fi
    if [ -z "$bindir" ]; then
        echo "postgres.sh: cannot find or install PostgreSQL (initdb, pg_ctl)" >&2
        return 1
    fi
    NAS_TEST_PG_USER=""
    if [ "$(id -u)" = 0 ]; then
        if ! id -u postgres >/dev/null 2>&1; then
            echo "postgres.sh: running as root, but there is no 'postgres' account to run the server" >&2
            return 1
        fi
        NAS_TEST_PG_USER=postgres
    fi
    # as root, under /tmp: the postgres account must be able to reach the folder
    dir=$(mktemp -d "$([ -n "$NAS_TEST_PG_USER" ] && echo /tmp || echo "${TMPDIR:-/tmp}")/nas-postgres.XXXXXX")
    [ -n "$NAS_TEST_PG_USER" ] && chown "$NAS_TEST_PG_USER" "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    export NAS_TEST_PG_USER NAS_TEST_PG_CTL="$bindir/pg_ctl" NAS_TEST_PGDATA="$dir/data"
    if ! _nas_pg_as "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-locale \
            --no-sync >"$dir/initdb.log" 2>&1; then
        echo "postgres.sh: initdb failed:" >&2; cat "$dir/initdb.log" >&2
        rm -rf "$dir"; unset NAS_TEST_PG_CTL NAS_TEST_PGDATA NAS_TEST_PG_USER
        return 1
    fi
    if ! _nas_pg_as "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off" \
            start >/dev/null; then
        echo "postgres.sh: the server did not start:" >&2; cat "$dir/server.log" >&2
        nas_postgres_stop
        return 1
    fi
    if ! _nas_pg_as "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres nas_test; then
        nas_postgres_stop
        return 1
    fi
    export NAS_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$port/nas_test"
    trap nas_postgres_stop EXIT
    echo "PostgreSQL $("$bindir/pg_ctl" --version | awk '{print $3}') at $NAS_TEST_POSTGRES_URL (data $NAS_TEST_PGDATA)" >&2
}

if [ -n "${NAS_TEST_PGDATA:-}" ] && [ -d "${NAS_TEST_PGDATA}" ]; then
    echo "postgres.sh: a cluster is already running at ${NAS_TEST_POSTGRES_URL:-?}" >&2
else
    nas_postgres_start
fi
