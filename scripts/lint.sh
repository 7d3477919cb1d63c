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

# Files named after what they do, each under 400 lines of non-test code (the lines before
# a file's first top-level `#[cfg(test)]`; test modules in their own files do not count).
long=$(find agent registry common proto client -path '*/src/*' -name '*.rs' \
  ! -name tests.rs ! -path '*/tests/*' -print0 |
  xargs -0 awk 'FNR == 1 { if (n > 400) print n, f; n = 0; f = FILENAME; stop = 0 }
    /^#\[cfg\(test\)\]/ { stop = 1 } !stop { n++ }
    END { if (n > 400) print n, f }')
if [ -n "$long" ]; then
  echo "lint.sh: over 400 lines of non-test code (split them by what they do):" >&2
  echo "$long" >&2
  exit 1
fi
