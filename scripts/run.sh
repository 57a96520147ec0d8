#!/usr/bin/env bash
# Install memed (serving dependencies and the demo's embedded broker; no torch, LightGBM, XGBoost or
# SciPy) into .venv and run the main job on embedded defaults: `memed demo` starts an embedded MQTT
# broker on loopback, loads the model set shipped in the package, replays the last day of the real
# 1-minute data in ../shared/data at high speed through the daemon and shows the latest signals live.
# Needs no external service.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install --quiet -e '.[demo]'
memed demo --data-root "${MEMED_DATA:-../shared/data}" "$@"
