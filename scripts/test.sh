#!/usr/bin/env bash
# Install memed with every extra into .venv and run the whole test suite.
# Used as-is by CI (.ci/run). Exit status: pytest's, except that "no tests ran" (5) also fails.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] && ! { command -v mosquitto && command -v chromium; } >/dev/null; then
  apt-get update && apt-get install -y mosquitto chromium   # the broker and the report's browser test
fi
python3 -m venv .venv
. .venv/bin/activate
pip install --quiet torch==2.13.0          # the local CPU build; an unpinned torch pulls GBs of CUDA
pip install --quiet -e '.[train,dev,demo,online,ray,scale]'
ruff check src tests benchmarks examples
ruff format --check src tests benchmarks examples
mypy
set +e
# a bound below CI's 90 minutes: a stuck run still ends with pytest's summary (SIGINT), not a silent kill
timeout --signal=INT --kill-after=60 "${MEMED_TEST_TIMEOUT:-4200}" python -m pytest "$@"
status=$?
set -e
if [ "$status" = 5 ]; then echo "no tests ran: failing" >&2; exit 1; fi
exit "$status"
