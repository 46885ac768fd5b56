#!/usr/bin/env bash
# The GPU check, one part per call, on a machine with no network (see check.py):
#
#   benchmarks/gpu/check.sh WHEELS OUT --part 1|2|3|4|all [--minutes 6] [--device cuda|cpu] [--smoke] [...]
#
# WHEELS: the folder benchmarks/gpu/wheels.sh filled (may be empty where every package is
# installed already, as in the CPU test). They are installed into a target folder with
# pip's --no-index and put on PYTHONPATH; vitsearch itself is not installed: its code
# folders are linked into a `vitsearch` namespace folder beside them. The remaining
# arguments go to check.py; OUT receives its JSON files (at most 8 per part).
set -uo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: $0 WHEELS OUT --part 1|2|3|4|all [--minutes 6] [--device cuda|cpu] [--smoke]" >&2
  exit 2
fi
wheels=$1 out=$2
shift 2
root=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-python3}
scratch=${VITSEARCH_GPU_SCRATCH:-$(mktemp -d /tmp/vitsearch-gpu.XXXXXX)}
mkdir -p "$out" "$scratch/site" "$scratch/ns/vitsearch"

shopt -s nullglob
whls=("$wheels"/*.whl)
if [[ ${#whls[@]} -gt 0 ]]; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$scratch/site" "${whls[@]}" || { echo "check.sh: installing the wheels from $wheels failed" >&2; exit 3; }
fi
for d in search spaces evaluators studies; do
  ln -sfn "$root/$d" "$scratch/ns/vitsearch/$d"
done
export PYTHONPATH="$scratch/site:$scratch/ns${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$python" "$root/benchmarks/gpu/check.py" --out "$out" --work "$scratch/work" "$@"
