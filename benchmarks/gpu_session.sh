#!/usr/bin/env bash
# Issue 19's GPU measurements in ONE device call of about 8 minutes (benchmarks/gpu_notes.md
# has the exact call). Variants run most-wanted first, each in its own process under its own
# `timeout`, and write their rows to $OUT/results.md as they go, so a variant that runs out
# of time costs only itself. JAX's persistent compilation cache lives in /tmp/jax_cache and
# is packed into $OUT/jax_cache.tgz after every JAX variant (only 8 files come back from
# $OUT); carried back in as .gpu/jax_cache.tgz, a second call skips those XLA compiles.
#
#   bash benchmarks/gpu_session.sh                     # on the GPU machine, .whl carried
#   DRY=1 OUT=/tmp/out bash benchmarks/gpu_session.sh  # CPU check: tiny models, one step
#
# BUDGET (seconds, default 470) bounds the whole run; ONLY (an extended regex) picks
# variants by name.
set -uo pipefail
out="${OUT:-/tmp/out}"
budget="${BUDGET:-470}"
mkdir -p "$out"
results="$out/results.md" log="$out/log.txt" cache=/tmp/jax_cache
[ -n "${DRY:-}" ] && cache="$out/jax_cache"
deadline=$((SECONDS + budget))

if [ -z "${DRY:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
    # The project maps training/ and export/ into keras_sep, so it must be installed.
    python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site . \
        || exit 1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.txt"
fi
mkdir -p "$cache"
[ -f .gpu/jax_cache.tgz ] && tar -xzf .gpu/jax_cache.tgz -C "$cache"
export PYTHONUNBUFFERED=1 KERAS_HOME=/tmp/keras TF_CPP_MIN_LOG_LEVEL=2
# Cache only the big step functions, not the many small weight initialisers.
export JAX_COMPILATION_CACHE_DIR="$cache" JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=2
python="${PYTHON:-python3}"
# Tiny models, batch 2, one step; the last occurrence of an argument wins.
dry_args=(--presets tiny --batch 2 --steps 1)

variant() {  # name, seconds allowed, backend, then env assignments and training_speed.py args
    local name=$1 limit=$2 backend=$3
    shift 3
    local envs=()
    while [[ ${1:-} == *=* ]]; do envs+=("$1") && shift; done
    if [ -n "${ONLY:-}" ] && ! [[ $name =~ $ONLY ]]; then return; fi
    local left=$((deadline - SECONDS))
    ((left < 0)) && left=0 # past the deadline: nothing left, however late the check runs
    ((limit > left)) && limit=$left
    if ((limit < 30)); then
        echo "<!-- $name: skipped, ${left} s of the budget left -->" >>"$results"
        return
    fi
    echo "<!-- $name: $backend ${envs[*]} $*, limit $limit s -->" >>"$results"
    local started=$SECONDS
    env KERAS_BACKEND="$backend" "${envs[@]}" timeout "$limit" "$python" \
        benchmarks/training_speed.py --song-seconds 0 "$@" ${DRY:+"${dry_args[@]}"} \
        2>>"$log" | grep --line-buffered -e "^| [a-z_]* |" -e "^backend" \
        | sed -u -e "/^| model |/d" -e "s/^backend.*/<!-- & -->/" >>"$results"
    local rc=${PIPESTATUS[0]}
    ((rc == 124)) && echo "<!-- $name: TIMEOUT after $limit s -->" >>"$results"
    ((rc != 0 && rc != 124)) && echo "<!-- $name: exit $rc, see log.txt -->" >>"$results"
    echo "<!-- $name: $((SECONDS - started)) s -->" >>"$results"
    if [ "$backend" = jax ]; then tar -czf "$out/jax_cache.tgz" -C "$cache" .; fi
}

ddu=(--archs dilated_dense) dun=(--archs dilated) both=(--impls keras auto)
f32=(--precisions float32) bf16=(--precisions mixed_bfloat16)
f32bf16=(--precisions float32 mixed_bfloat16)
echo "| model | preset | conv | precision | batch | params | GFLOP/segment | first step | step | TFLOP/s | separate RTF |" >"$results"
echo "|---|---|---|---|---|---|---|---|---|---|---|" >>"$results"
# torch compiles nothing: plain vs auto untuned, then everything tuned, then batch 32.
variant torch-ddu-untuned 100 torch KERAS_SEP_TORCH_TUNING=0 "${ddu[@]}" "${both[@]}" "${f32[@]}"
variant torch-tuned 150 torch --archs dilated_dense dilated "${both[@]}" "${f32bf16[@]}"
variant torch-ddu-b32 70 torch "${ddu[@]}" --impls auto "${f32bf16[@]}" --batch 32
# JAX: each row compiles for one to three minutes the first time; the missing bf16 row first.
variant jax-ddu-bf16 240 jax "${ddu[@]}" --impls auto "${bf16[@]}"
variant jax-ddu 240 jax "${ddu[@]}" "${both[@]}" "${f32[@]}"
variant jax-dun 200 jax "${dun[@]}" "${both[@]}" "${f32[@]}"
variant jax-ddu-b32 200 jax "${ddu[@]}" --impls auto "${f32[@]}" --batch 32
echo "<!-- done after $SECONDS s -->" >>"$results"
