#!/usr/bin/env bash
# The whole test suite: unit tests, the store suite on SQLite and MySQL, and the
# end-to-end tests (real registry and agent processes on loopback).
#
# What it runs is installed first when missing (scripts/deps.sh): a C compiler, bash,
# coreutils, curl and dig; under CI=true also MariaDB. Nothing asks for input.
#
# MySQL: CORRAL_TEST_MYSQL_URL, default mysql://root@127.0.0.1:3306 (tests create and drop
# their own databases). When no server answers, the MySQL half fails under CI=true and is
# skipped, loudly, everywhere else.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

deps_rust
deps_compiler
deps_tests

mysql_url="${CORRAL_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306}"
hostport=$(sed -E 's#^[a-z]+://([^@/]*@)?([^/?]+).*#\2#' <<<"$mysql_url")
mysql_host=${hostport%:*}
mysql_port=${hostport##*:}
[ "$mysql_host" = "$hostport" ] && mysql_port=3306
mysql_user=$(sed -nE 's#^[a-z]+://([^:@/]+)(:[^@/]*)?@.*#\1#p' <<<"$mysql_url")
mysql_user=${mysql_user:-root}
mysql_pass=$(sed -nE 's#^[a-z]+://[^:@/]+:([^@/]*)@.*#\1#p' <<<"$mysql_url")

mysql_answers() { (exec 3<>"/dev/tcp/$mysql_host/$mysql_port") 2>/dev/null; }

# Under CI on the machine's own loopback: install MariaDB when there is none (and let the
# tests' user in over TCP, as only a server this script installed may be changed), then
# start it when it does not answer.
if ! mysql_answers && [ "${CI:-}" = "true" ] && [ "$mysql_host" = "127.0.0.1" ]; then
  if [ ! -x /usr/sbin/mariadbd ]; then
    deps_apt mariadb-server mariadb-client
    installed_mariadb=1
  fi
  if [ -x /usr/sbin/mariadbd ]; then
    echo "test.sh: MariaDB does not answer on $hostport; starting it"
    deps_run install -d -o mysql -g mysql /run/mysqld || true
    deps_run start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
    for _ in $(seq 1 60); do mysql_answers && break; sleep 0.5; done
  fi
  if [ -n "${installed_mariadb:-}" ] && mysql_answers && [ "$mysql_user" = "root" ]; then
    # A fresh Debian MariaDB lets root in through its socket only; the tests connect
    # over TCP without a password, as mysql://root@127.0.0.1:3306 says.
    deps_run mariadb -uroot -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; \
      GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" </dev/null || true
  fi
fi

# It answers; does the tests' user get in? (Asked when a client is there to ask.)
mysql_login() {
  local client
  client=$(command -v mariadb || command -v mysql) || return 0
  MYSQL_PWD="$mysql_pass" "$client" --protocol=tcp -h "$mysql_host" -P "$mysql_port" \
    -u "$mysql_user" -e 'SELECT 1' >/dev/null 2>&1 </dev/null
}

if mysql_answers && ! mysql_login; then
  echo "test.sh: MySQL answers at $hostport but refuses the user $mysql_user of" >&2
  echo "  CORRAL_TEST_MYSQL_URL (${mysql_url/:$mysql_pass@/:***@}); set it to an account that gets in" >&2
  [ "${CI:-}" = "true" ] && exit 1
  export CORRAL_TEST_MYSQL_SKIP=1
  echo " MySQL half SKIPPED: the server refuses the test account"
elif mysql_answers; then
  export CORRAL_TEST_MYSQL_URL="$mysql_url"
  unset CORRAL_TEST_MYSQL_SKIP
elif [ "${CI:-}" = "true" ]; then
  echo "test.sh: no MySQL server answers at $hostport; the MySQL store tests must run in CI" >&2
  echo "  (start MariaDB there, or set CORRAL_TEST_MYSQL_URL to a server that answers)" >&2
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
  echo "test.sh: cargo-nextest is not installed; running cargo test"
  cargo test --workspace --locked --no-fail-fast
fi

# Benchmark smoke tests: short variants of the benchmarks, not timed (the figures are
# meaningless at this size and on debug builds); each must run to its end and fails loudly
# when what it measures does not happen (storm: no reports arrive, or the admin CLI fails;
# distribute: Corral and the nginx + curl + sha256sum + tar pipelines each deliver a 1 MiB
# package to 2 nodes).
echo "test.sh: benchmark smoke runs"
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
  sed -E 's/.*"target_directory":"([^"]*)".*/\1/')
bin="$target_dir/debug"
"$bin/discovery" --registry "$bin/registry" --agent "$bin/agent" \
  --concurrency 1 --duration 300ms --watchers 10 --watch-conns 0,2 --rounds 2 >/dev/null
"$bin/storm" --smoke
# dns_http: the agent's DNS beside dnsmasq, then blocking queries woken on the registry, an
# agent and the two floors; it fails on a wrong DNS answer or a client not woken in time.
"$bin/dns_http" --registry "$bin/registry" --agent "$bin/agent" \
  --dns-clients 2 --duration 300ms --wake-clients 20 --rounds 2 >/dev/null
"$bin/distribute" --smoke --registry "$bin/registry" --agent "$bin/agent"
# sessions: 200 simulated agents on one registry, on SQLite and (when it answers) MySQL;
# it fails when a session does not come up, or when a SIGKILLed agent's node is not marked
# down with its endpoint gone.
smoke_dbs=sqlite
[ "${CORRAL_TEST_MYSQL_SKIP:-}" = "1" ] || smoke_dbs=sqlite,mysql
"$bin/sessions" --smoke --db "$smoke_dbs" --registry "$bin/registry"
