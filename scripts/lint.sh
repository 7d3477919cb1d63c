#!/usr/bin/env bash
# The lint gate, the same locally and in CI: formatting and clippy with warnings as errors.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
