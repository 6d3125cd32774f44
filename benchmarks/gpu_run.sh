#!/usr/bin/env bash
# On the GPU machine (no network): install the wheels benchmarks/gpu_carry.sh put in .wheels/ into a
# target folder, offline and without dependency resolution, print the versions that will run (and
# any requirement of a carried package the image does not meet), then run benchmarks/gpu_check.py
# with the arguments given.
#
#   bash benchmarks/gpu_run.sh --out-dir "$OUT"      # the results come back from $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=${GIFT_SITE:-/tmp/gift_site}
PY=${PYTHON:-python3}
DEST=${WHEELS:-.wheels}
compgen -G "$DEST/*.whl" >/dev/null || { echo "gpu_run.sh: no wheels in $DEST; run benchmarks/gpu_carry.sh first" >&2; exit 1; }
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$DEST"/*.whl
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
"$PY" benchmarks/gpu_preflight.py
exec "$PY" benchmarks/gpu_check.py "$@"
