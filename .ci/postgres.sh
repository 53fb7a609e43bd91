# A throw-away PostgreSQL server for the review store's tests. Source this file, then:
#   pg_test_start   install Debian's postgresql when missing (as root), start a fresh cluster in a
#                   temporary folder, listening on 127.0.0.1 only (password auth), create a database
#                   and export RRG_TEST_POSTGRES_URL
#   pg_test_stop    stop that server and delete its folder (safe to call twice, or when none started)
# Returns non-zero when a server should have started and did not; returns 0 without a server (and
# says so) only when PostgreSQL is absent and cannot be installed (not root), so the tests skip.

pg_test_bindir() {
  # The newest installed major version (Debian keeps each under /usr/lib/postgresql/N/bin).
  find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1
}

pg_test_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_test_start() {
  local bindir port password
  bindir=$(pg_test_bindir)
  if [ -z "$bindir" ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "PostgreSQL is not installed and this is not root: the store's PostgreSQL tests will skip"
      return 0
    fi
    echo "== installing PostgreSQL (apt-get)"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql || return 1
    bindir=$(pg_test_bindir)
    [ -n "$bindir" ] || { echo "postgresql installed but no server binaries under /usr/lib/postgresql"; return 1; }
  fi

  PG_TEST_DIR=$(mktemp -d "${TMPDIR:-/tmp}/rrg-pg.XXXXXX") || return 1
  # The server refuses to run as root: as root, run it as the postgres user the package created.
  PG_TEST_AS=()
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$PG_TEST_DIR" || return 1
    PG_TEST_AS=(runuser -u postgres --)
  fi
  password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  printf '%s\n' "$password" >"$PG_TEST_DIR/pwfile"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$PG_TEST_DIR/pwfile"
  if ! "${PG_TEST_AS[@]}" "$bindir/initdb" -D "$PG_TEST_DIR/data" -U postgres --pwfile="$PG_TEST_DIR/pwfile" \
      --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 --no-locale >"$PG_TEST_DIR/initdb.log" 2>&1; then
    cat "$PG_TEST_DIR/initdb.log"
    return 1
  fi
  rm -f "$PG_TEST_DIR/pwfile"
  port=$(pg_test_free_port)
  # Loopback only; the Unix socket lives in the private folder, not in /var/run/postgresql.
  if ! "${PG_TEST_AS[@]}" "$bindir/pg_ctl" -D "$PG_TEST_DIR/data" -l "$PG_TEST_DIR/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_TEST_DIR -c fsync=off" start >/dev/null; then
    echo "PostgreSQL did not start; its log:"
    cat "$PG_TEST_DIR/server.log" 2>/dev/null
    return 1
  fi
  PG_TEST_BINDIR=$bindir
  if ! PGPASSWORD=$password "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres rrg_test; then
    pg_test_stop
    return 1
  fi
  export RRG_TEST_POSTGRES_URL="postgresql+psycopg://postgres:$password@127.0.0.1:$port/rrg_test"
  echo "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $PG_TEST_DIR)"
}

pg_test_stop() {
  if [ -n "${PG_TEST_DIR:-}" ] && [ -d "$PG_TEST_DIR" ]; then
    if [ -n "${PG_TEST_BINDIR:-}" ] && [ -f "$PG_TEST_DIR/data/postmaster.pid" ]; then
      "${PG_TEST_AS[@]}" "$PG_TEST_BINDIR/pg_ctl" -D "$PG_TEST_DIR/data" -m fast -w stop >/dev/null 2>&1 \
        || echo "warning: could not stop the test PostgreSQL in $PG_TEST_DIR"
    fi
    rm -rf "$PG_TEST_DIR"
  fi
  PG_TEST_DIR=
  unset RRG_TEST_POSTGRES_URL
}
