#!/usr/bin/env bash
# Install memed (serving dependencies only, no torch) into .venv and run the main job on embedded
# defaults: import the real 1-minute futures data and stream it minute by minute through the feature
# engine, exactly as the daemon will. Needs no external service.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install --quiet -e .
DATA="${MEMED_DATA:-../shared/data}/binance-futures-1m"
mkdir -p out
memed data import "$DATA" --out out/futures-1m.parquet
memed data info out/futures-1m.parquet
memed features compute out/futures-1m.parquet --out out/features-1m.parquet --mode stream
