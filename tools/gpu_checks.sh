#!/usr/bin/env bash
# The checks only a GPU can run, prepared for one call on a lent machine (../shared/DEVICE.md:
# its torch is 2.11 with CUDA and it has no yacs, so carry the wheel in .whl), in order of
# value, each part under its own timeout so that one stuck part leaves the others' logs:
#
#   run(command="bash tools/gpu_checks.sh", carry=[".whl"], timeout_s=590)
#
# Writes to $OUT (the device tool's folder; /tmp/gpu_checks elsewhere): machine.txt, cuda_tests.log,
# bench_cuda.txt/.json, compiled_step.txt, suite.log. Needs ~9 minutes; parts past the time left
# are skipped. On a machine without CUDA it runs too (the CUDA tests skip, the benchmark refuses).
set -u
OUT=${OUT:-/tmp/gpu_checks}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
started=$SECONDS

part() {  # part NAME SECONDS COMMAND...: run COMMAND with its output in $OUT/NAME
    local name=$1 limit=$2
    shift 2
    if (( SECONDS - started + limit > 570 )); then
        echo "skipped: not enough time left" > "$OUT/$name"
        return
    fi
    timeout "$limit" "$@" > "$OUT/$name" 2>&1
    echo "exit $? after $((SECONDS - started)) s" >> "$OUT/$name"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nproc
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } > "$OUT/machine.txt" 2>&1
# 1. The CUDA tests: no sync on quiet steps (each precision and clip), SIGKILL + resume bit-identical.
part cuda_tests.log 180 python3 -m pytest -q -p no:cacheprovider tests/tools/test_cuda.py
# 2. train_net's step against a bare loop and the clip paths against torch's fused step.
part bench_cuda.txt 200 python3 tools/benchmark_solver.py --cfg cfgs/digits_cnn_sgd_step.yaml \
    --device cuda --json "$OUT/bench_cuda.json"
# 3. The compiled step against the eager fused one.
part compiled_step.txt 120 python3 tools/benchmark_solver.py --cfg cfgs/digits_cnn_sgd_step.yaml \
    --device cuda --compiled-step
# 4. The whole suite with CUDA visible (pytest-xdist is installed there); not -x: under that
#    machine's torch 2.11 a few tests fail for the version alone (README, "Other torch versions").
part suite.log 240 python3 -m pytest -q -n 8 -p no:cacheprovider -rf
