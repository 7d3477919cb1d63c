#!/usr/bin/env bash
# Installs Corral on this host: the binaries, the systemd units, config templates and the
# cron self-check of the agent. Safe to run again (after an upgrade, say): every file is
# replaced by rename, and nothing is enabled or started.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/install.sh [--prefix DIR] [--bin-dir DIR]

Installs, under PREFIX (default /):
  usr/local/bin/{agent,registry}                       the binaries
  etc/systemd/system/corral-{agent,registry}.service   the systemd units
  etc/corral/{agent,registry}.toml.example             config templates
  etc/cron.d/corral-agent-check                        `agent check` every minute

Options:
  --prefix DIR   install under DIR instead of / (for packaging or a test); systemd is
                 then left alone
  --bin-dir DIR  take the binaries from DIR and never build [default: target/release,
                 built with `cargo build --release` when a binary is missing]
  -h, --help     this text

Then, as root:
  systemctl enable --now corral-registry              # on the registry host
  echo CORRAL_LOCATOR=http://REGISTRY:17890 >> /etc/corral/agent.env
  systemctl enable --now corral-agent                 # on every host
EOF
}

die() {
  echo "install.sh: $*" >&2
  exit 2
}

repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=/
bin_dir=
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix)
      [ $# -ge 2 ] || die "--prefix needs a directory"
      prefix=$2
      shift 2
      ;;
    --bin-dir)
      [ $# -ge 2 ] || die "--bin-dir needs a directory"
      bin_dir=$2
      shift 2
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

# Without --bin-dir: the release build of this checkout, built if a binary is missing.
if [ -z "$bin_dir" ]; then
  bin_dir="$repo/target/release"
  if [ ! -x "$bin_dir/agent" ] || [ ! -x "$bin_dir/registry" ]; then
    echo "install.sh: building the release binaries"
    (cd "$repo" && cargo build --release --locked --bin agent --bin registry)
  fi
fi
for b in agent registry; do
  [ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing or not executable"
done

root=${prefix%/}
[ -z "$root" ] || mkdir -p "$root" || die "cannot create $prefix"

# put MODE SRC DEST: copies SRC beside DEST and renames it into place, so that a running
# binary is never rewritten and a reader never sees half a file.
put() {
  local mode=$1 src=$2 dest=$3
  mkdir -p "$(dirname "$dest")"
  install -m "$mode" "$src" "$dest.new"
  mv -f "$dest.new" "$dest"
  echo "  $dest"
}

# put_text MODE DEST: the same for the text on stdin.
put_text() {
  local mode=$1 dest=$2
  mkdir -p "$(dirname "$dest")"
  cat >"$dest.new"
  chmod "$mode" "$dest.new"
  mv -f "$dest.new" "$dest"
  echo "  $dest"
}

echo "install.sh: installing under ${prefix}"
put 0755 "$bin_dir/agent" "$root/usr/local/bin/agent"
put 0755 "$bin_dir/registry" "$root/usr/local/bin/registry"
for unit in corral-agent.service corral-registry.service; do
  put 0644 "$repo/scripts/systemd/$unit" "$root/etc/systemd/system/$unit"
done
for example in agent.toml.example registry.toml.example; do
  put 0644 "$repo/scripts/systemd/$example" "$root/etc/corral/$example"
done

put_text 0644 "$root/etc/cron.d/corral-agent-check" <<'EOF'
# Corral: every minute, check that the local agent answers on its /health and start it
# again if it does not (through systemd when systemd started it). Installed by
# scripts/install.sh.
* * * * * root /usr/local/bin/agent check --data-dir /var/lib/corral >/dev/null 2>&1
EOF

# Only on the real system, and only where systemd runs.
if [ -z "$root" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "install.sh: systemd reloaded"
fi
echo "install.sh: done; see --help for what to enable"
