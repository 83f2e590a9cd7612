#!/usr/bin/env bash
# Everything the tests need on a fresh Debian machine, idempotent: the project and its test
# dependencies in .venv; Debian's Chromium for the console's browser tests (Playwright drives it; its
# own browser download is never used); axe-core from the npm registry, which those tests run in the
# browser to check WCAG 2.1 AA.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
if [ -z "${COMMS_TEST_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y -q chromium >/dev/null || { $sudo apt-get update -q && $sudo apt-get install -y -q chromium; }
fi
npm install --no-audit --no-fund --silent --prefix tests/.npm axe-core@4.14.1
