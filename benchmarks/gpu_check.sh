#!/usr/bin/env bash
# The one prepared GPU run of issue 23 ("Accelerators"), for a session whose task is lent a GPU.
#
# Once, on the developer machine, in the checkout the device tool sends (its root):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 --platform any -d .whl ml-collections==1.1.0 qwix==0.1.8
# (the GPU image has jax/jaxlib with CUDA, flax, optax, orbax, transformers, peft, tokenizers and pytest;
# these two are what jaxformer imports beyond them). Then one device call:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
# It writes under $OUT: device.txt, tests.txt (attention/model/decoding tests on the GPU),
# attention_kernels.json (cuDNN flash attention vs the reference) and compare_gpu.json
# (`benchmarks.compare --shape gpt2-124m`: MFU and the ratio to transformers on the same GPU).
# GPU_CHECK_QUICK=1 runs a few-second version of each part (how it is tested on a CPU).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=${PYTHON:-python3}
quick=${GPU_CHECK_QUICK:-0}
{ nvidia-smi -L 2>&1; $PY -c "import jax; print('jax', jax.__version__, jax.devices())"; } | tee "$OUT/device.txt"

if [ "$quick" = 1 ]; then tests=(tests/layers/test_attention.py); else tests=(tests/layers tests/models tests/decoding); fi
timeout 240 $PY -m pytest -q -m "not slow" -p no:cacheprovider "${tests[@]}" >"$OUT/tests.txt" 2>&1
echo "tests: exit $? ($(tail -1 "$OUT/tests.txt"))"

if [ "$quick" = 1 ]; then quick_flag=(--quick); else quick_flag=(); fi
timeout 120 $PY -m benchmarks.attention_kernels "${quick_flag[@]}" --json "$OUT/attention_kernels.json" 2>&1 | tail -12
if [ "$quick" = 1 ]; then
  timeout 200 $PY -m benchmarks.compare --quick --parts decode --batches 1 --json "$OUT/compare_gpu.json" 2>&1 | tail -8
else
  timeout 200 $PY -m benchmarks.compare --shape gpt2-124m --json "$OUT/compare_gpu.json" 2>&1 | tail -12
fi
ls -l "$OUT"
