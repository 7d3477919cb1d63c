#!/usr/bin/env bash
# The lint gate, the same locally and in CI: formatting and clippy with warnings as errors.
# rustfmt, clippy and a C compiler are installed first when missing (scripts/deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
deps_rust rustfmt clippy
deps_compiler
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
