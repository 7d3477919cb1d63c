#!/usr/bin/env bash
# Rewrites docs/dashboard/*.png: runs the dashboard's browser test (a real headless
# Chromium through chromedriver, against a real registry and three agents) with
# CORRAL_SCREENSHOTS set, so it saves a PNG of each page as it goes.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
deps_tests
cargo build --workspace --bins
mkdir -p docs/dashboard
CORRAL_SCREENSHOTS="$PWD/docs/dashboard" \
  cargo test -p corral-tests --test dashboard -- in_a_browser
ls -l docs/dashboard
