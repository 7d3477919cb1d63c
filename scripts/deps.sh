#!/usr/bin/env bash
# What scripts/lint.sh and scripts/test.sh need, installed when missing, so that both run
# on a fresh machine (CI) with nothing but a Rust toolchain and Debian's apt. Sourced, not
# run. Nothing asks for input: apt-get -y with DEBIAN_FRONTEND=noninteractive, rustup
# component add. Installing needs root (or sudo without a password); without it, the
# message says what is missing and the command that installs it.
#
# CORRAL_DEPS_DRY_RUN=1 prints the install commands instead of running them.

# deps_run CMD...: runs a command as root (directly, or through `sudo -n`).
deps_run() {
  if [ "${CORRAL_DEPS_DRY_RUN:-}" = "1" ]; then
    echo "deps: would run: $*"
    return 0
  fi
  if [ "$(id -u)" = "0" ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    echo "deps: need root to run: $*" >&2
    return 1
  fi
}

deps_apt_updated=
# deps_apt PACKAGE...: installs Debian packages, non-interactively.
deps_apt() {
  [ $# -gt 0 ] || return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "deps: missing $*, and there is no apt-get to install them with; install them by hand" >&2
    return 1
  fi
  echo "deps: installing $* (apt-get)"
  if [ -z "$deps_apt_updated" ]; then
    deps_run env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null || {
      echo "deps: apt-get update failed; install $* by hand" >&2
      return 1
    }
    deps_apt_updated=1
  fi
  deps_run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" </dev/null || {
    echo "deps: could not install $*: apt-get install -y $* failed" >&2
    return 1
  }
}

# deps_commands COMMAND:PACKAGE...: installs the package of each command that is missing.
deps_commands() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] || deps_apt $(printf '%s\n' "${missing[@]}" | sort -u)
}

# deps_rust COMPONENT...: the cargo toolchain and the rustup components lint.sh uses.
deps_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "deps: no cargo on PATH: install a Rust toolchain first (https://rustup.rs)" >&2
    return 1
  fi
  local c tool
  for c in "$@"; do
    case "$c" in
      rustfmt) tool=fmt ;;
      *) tool=$c ;;
    esac
    cargo "$tool" --version >/dev/null 2>&1 && continue
    if ! command -v rustup >/dev/null 2>&1; then
      echo "deps: cargo $tool is missing and there is no rustup to add it; install $c" >&2
      return 1
    fi
    echo "deps: adding the rustup component $c"
    if [ "${CORRAL_DEPS_DRY_RUN:-}" = "1" ]; then
      echo "deps: would run: rustup component add $c"
    else
      rustup component add "$c" </dev/null || {
        echo "deps: rustup component add $c failed" >&2
        return 1
      }
    fi
  done
}

# deps_compiler: a C compiler and linker: build scripts (ring, SQLite) compile C, for
# clippy as much as for a build.
deps_compiler() {
  deps_commands "cc:gcc libc6-dev" ld:binutils
}

# deps_tests: what the end-to-end tests run besides the built binaries: bash and the
# coreutils (scripts/install.sh; service commands such as sleep, env, sh -c), curl
# (the TLS tests fetch /health with it) and dig (the DNS tests ask the agent with a real
# resolver client), chromium and chromedriver (the dashboard tests drive a real headless
# browser), nginx, sha256sum and tar (the distribution benchmark's smoke run compares
# Corral with nginx + curl + sha256sum + tar; it runs nginx as its own process, with its
# own config, and never starts or changes the system's), dnsmasq (the DNS benchmark's
# smoke run asks it beside the agent; dnsmasq-base is the program without a service).
deps_tests() {
  deps_commands bash:bash sh:dash sleep:coreutils install:coreutils env:coreutils curl:curl \
    dig:dnsutils chromium:chromium chromedriver:chromium-driver nginx:nginx \
    sha256sum:coreutils tar:tar dnsmasq:dnsmasq-base
}
