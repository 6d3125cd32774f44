#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.py needs that the GPU machine's image lacks (it has python 3.12,
# torch 2.11+cu130, transformers, peft and accelerate, and no network), downloaded here into
# .wheels/ (ignored by git) for CPython 3.12 on x86-64 Linux:
#   trl, bitsandbytes, datasets at the pins of pyproject.toml, and the two pure-Python needs of
#   datasets the image does not have (dill, multiprocess, within datasets 5.2's bounds).
# bitsandbytes' wheel (43 MB) holds one library per CUDA/ROCm/XPU release; by default it is
# repacked with only the CPU library and those for CUDA $BNB_CUDA (default "130 132": torch cu130),
# 7 MB, so the carry (9 MB of wheels) fits beside the whole working tree (42 MB tracked, 37 MB of
# it data/) under the 64 MiB a GPU machine takes. --full keeps the original wheel (45 MB of wheels):
# then data/ and figures/ must stay out of the tree that travels (the check reads no committed file).
#
#   bash benchmarks/gpu_carry.sh            # or: make gpu-carry
#   bash benchmarks/gpu_carry.sh --full
# The GPU machine then runs benchmarks/gpu_run.sh (README "Performance").
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${WHEELS:-.wheels}
PY=${PYTHON:-python3}
BNB_CUDA=${BNB_CUDA:-130 132}
FULL=0
[[ "${1:-}" == "--full" ]] && FULL=1

# The pins of trl, bitsandbytes and datasets, read from pyproject.toml (one source of truth).
mapfile -t PINS < <("$PY" - <<'EOF'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for dep in deps:
    if re.match(r"(trl|bitsandbytes|datasets)\b", dep):
        print(dep)
EOF
)
[[ ${#PINS[@]} -eq 3 ]] || { echo "gpu_carry.sh: expected pins of trl, bitsandbytes, datasets in pyproject.toml, got: ${PINS[*]}" >&2; exit 1; }

rm -rf "$DEST" && mkdir -p "$DEST"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any \
    -d "$DEST" "${PINS[@]}" "dill>=0.3.0,<0.4.2" "multiprocess<0.70.20"

if [[ $FULL -eq 0 ]]; then
    # Repack bitsandbytes without the native libraries torch cu130 never loads; RECORD loses their lines.
    "$PY" - "$DEST" $BNB_CUDA <<'EOF'
import sys, zipfile
from pathlib import Path

dest, keep_cuda = Path(sys.argv[1]), sys.argv[2:]
keep = {"libbitsandbytes_cpu.so"} | {f"libbitsandbytes_cuda{v}.so" for v in keep_cuda}
(wheel,) = dest.glob("bitsandbytes-*.whl")
tmp = wheel.with_suffix(".tmp")
dropped = 0
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
    for item in src.infolist():
        name = item.filename.rsplit("/", 1)[-1]
        if name.startswith("libbitsandbytes_") and name not in keep:
            dropped += 1
            continue
        data = src.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            lines = [line for line in data.decode().splitlines()
                     if not ((n := line.split(",")[0].rsplit("/", 1)[-1]).startswith("libbitsandbytes_")
                             and n not in keep)]
            data = ("\n".join(lines) + "\n").encode()
        out.writestr(item, data)
tmp.replace(wheel)
print(f"bitsandbytes: kept {sorted(keep)}, dropped {dropped} other native libraries")
EOF
fi

ls -l "$DEST"
echo "carry: $(du -cb "$DEST"/*.whl | tail -1 | cut -f1) bytes of wheels in $DEST"
echo "tree:  $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes tracked, of which data/ $(git ls-files -z data | xargs -0 du -cb | tail -1 | cut -f1)"
