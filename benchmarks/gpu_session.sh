#!/usr/bin/env bash
# The GPU measurements of issues 9 and 10, staged so each stage fits one device call
# (10 minutes per call, 30 minutes per session; see docs/performance.md).
#
# The H100 machine has JAX, PyTorch and numpy but no TensorFlow, no network and no keras.
# Before the first call, put Python 3.12 wheels in .whl/ (ignored by git; see the device
# tool's README for the pip download flags):
#   keras==3.15.1 namex optree rich markdown-it-py mdurl pygments h5py ml-dtypes
#   soundfile cffi pycparser pyyaml tqdm scipy
# Then run one stage per call, carrying .whl:
#   bash benchmarks/gpu_session.sh ddu      # DDU: plain vs ours, float32 vs bf16, JAX and torch
#   bash benchmarks/gpu_session.sh others   # Dilated U-Net and Wave-U-Net, same table
#   bash benchmarks/gpu_session.sh train    # 10-minute train.py run of the paper DDU (JAX)
set -uo pipefail
stage="${1:?usage: gpu_session.sh ddu|others|train}"
out="${OUT:-/tmp/out}"
mkdir -p "$out"

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
# The project maps training/ and export/ into keras_sep, so it must be installed.
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site . || exit 1
export PYTHONUNBUFFERED=1 KERAS_HOME=/tmp/keras
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"

speed() {  # backend, then training_speed.py arguments
    local backend=$1
    shift
    KERAS_BACKEND=$backend timeout 280 python3 benchmarks/training_speed.py "$@" \
        2>&1 | tee -a "$out/training_speed_$backend.md"
}

case "$stage" in
ddu)
    speed jax --archs dilated_dense
    speed torch --archs dilated_dense --precisions float32
    ;;
others)
    speed jax --archs dilated wave_u_net --precisions float32
    speed torch --archs dilated wave_u_net --precisions float32
    ;;
train)
    # Synthetic songs (the pure-numpy generator runs there; FluidSynth does not).
    KERAS_BACKEND=jax timeout 570 python3 training/train.py --config dilated_dense --data toy \
        --set toy_songs=32 --set toy_valid_songs=4 --set steps_per_epoch=100 \
        --set valid_segments_per_track=4 --epochs 1000 --out /tmp/ddu_gpu \
        --cache-dir /tmp/cache 2>&1 | tr '\r' '\n' | grep -v "step -" | tee "$out/train.log"
    cp /tmp/ddu_gpu/history.csv "$out/" 2>/dev/null
    ;;
*)
    echo "unknown stage $stage" >&2
    exit 2
    ;;
esac
