#!/usr/bin/env bash
# The whole test suite: unit tests, the store suite on SQLite and MySQL, and the
# end-to-end tests (real registry and agent processes on loopback).
#
# MySQL: CORRAL_TEST_MYSQL_URL, default mysql://root@127.0.0.1:3306 (tests create and drop
# their own databases). When no server answers, the MySQL half fails under CI=true and is
# skipped, loudly, everywhere else.
set -euo pipefail
cd "$(dirname "$0")/.."

mysql_url="${CORRAL_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306}"
hostport=$(sed -E 's#^[a-z]+://([^@/]*@)?([^/?]+).*#\2#' <<<"$mysql_url")
mysql_host=${hostport%:*}
mysql_port=${hostport##*:}
[ "$mysql_host" = "$hostport" ] && mysql_port=3306

mysql_answers() { (exec 3<>"/dev/tcp/$mysql_host/$mysql_port") 2>/dev/null; }

if ! mysql_answers && [ "${CI:-}" = "true" ] && [ -x /usr/sbin/mariadbd ] \
    && [ "$mysql_host" = "127.0.0.1" ]; then
  echo "test.sh: MariaDB does not answer on $hostport; starting it"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  for _ in $(seq 1 60); do mysql_answers && break; sleep 0.5; done
fi

if mysql_answers; then
  export CORRAL_TEST_MYSQL_URL="$mysql_url"
  unset CORRAL_TEST_MYSQL_SKIP
elif [ "${CI:-}" = "true" ]; then
  echo "test.sh: no MySQL server answers at $hostport; the MySQL store tests must run in CI" >&2
  exit 1
else
  export CORRAL_TEST_MYSQL_SKIP=1
  echo "================================================================"
  echo " MySQL half SKIPPED: no server answers at $hostport"
  echo " (set CORRAL_TEST_MYSQL_URL to point the MySQL tests at a server)"
  echo "================================================================"
fi

# The end-to-end tests run the real binaries.
cargo build --workspace --bins --locked
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
