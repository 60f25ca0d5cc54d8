#!/usr/bin/env bash
# One prepared run for a GPU machine (an NVIDIA H100 or similar), a few minutes end to end:
#   1. glint's wgpu tests on the GPU (Vulkan): the fused deformable-attention kernel equals the
#      composed version, and the tiny fixture model gives the CPU's detections;
#   2. Grounding-DINO-T's shape (random weights, built by compare_pytorch.py) at 1333x800:
#      transformers on CUDA (eager, f32 and f16) against `glint bench --device wgpu` (f32, f16)
#      on the same checkpoint and image, batch 1 and 8, and a CubeCL kernel profile of one glint
#      run; one table at the end.
#
# Run from the repository root:  bash benches/gpu.sh [OUT_DIR]
# Needs python3 with torch (CUDA), transformers 5.x, tokenizers, pillow, safetensors.
# glint comes from `cargo` when the machine has a Rust toolchain; otherwise GLINT_PREBUILT names a
# folder holding a `glint` binary and the test binary of tests/gpu.rs built elsewhere for x86-64,
# named `gpu-test` (either may be xz-compressed: glint.xz, gpu-test.xz).
# Knobs: GPU_RUNS (timed runs, default 5), GPU_SIZE (default 1333x800), GPU_STEP_TIMEOUT (seconds
# per glint step, default 240), GPU_PLAN (the steps in order, default below).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-/tmp/glint-gpu}"
mkdir -p "$out"
runs="${GPU_RUNS:-5}"
size="${GPU_SIZE:-1333x800}"
step_timeout="${GPU_STEP_TIMEOUT:-240}"
plan="${GPU_PLAN:-tests torch-f32-b1 glint-f32-b1 profile-f32-b1 glint-f16-b1 torch-f16-b1 torch-f32-b8 torch-f16-b8 glint-f32-b8 glint-f16-b8}"
model_dir=/tmp/glint-bench/gdino-t-random
image="$model_dir/bench-$size.png"
summary="$out/summary.tsv"
export PYTHONUNBUFFERED=1

stamp() { echo "== $(date +%T) $*"; }
stamp "start: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"

# wgpu needs the Vulkan loader; NVIDIA's driver folder provides the ICD.
ldconfig -p | grep -q 'libvulkan\.so\.1' || echo "no libvulkan.so.1: install the Vulkan loader (libvulkan1)" >&2
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -e /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi

# --- glint binaries ---------------------------------------------------------------------------
bin="$out/bin"
mkdir -p "$bin"
if [ -n "${GLINT_PREBUILT:-}" ]; then
    for name in glint gpu-test; do
        if [ -e "$GLINT_PREBUILT/$name.xz" ]; then
            xz -dc "$GLINT_PREBUILT/$name.xz" >"$bin/$name"
        else
            cp "$GLINT_PREBUILT/$name" "$bin/$name"
        fi
        chmod +x "$bin/$name"
    done
else
    cargo build --release -p glint-cli || exit 1
    cp "${CARGO_TARGET_DIR:-target}/release/glint" "$bin/glint"
    cargo test --release --test gpu --no-run 2>&1 | tee "$out/build.log"
    test_bin=$(grep -o '(\S*/gpu-[0-9a-f]*)' "$out/build.log" | tr -d '()' | tail -1)
    cp "$test_bin" "$bin/gpu-test"
fi

printf 'tool\tdtype\tbatch\tbackbone_ms\ttext_ms\tencoder_ms\tdecoder_ms\tend_to_end_ms\timages_per_s\n' >"$summary"

torch_step() { # dtype batch
    local json="$out/torch-$1-b$2.json"
    python3 benches/compare_pytorch.py --shape full --save "$model_dir" --size "$size" --device cuda \
        --dtype "$1" --batch "$2" --runs "$runs" --threads 8 --json "$json" || return 1
    python3 - "$json" "$1" "$2" >>"$summary" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["stages"]
ms = lambda k: f"{r[k]['median_s'] * 1e3:.1f}"
print("\t".join(["transformers-cuda", sys.argv[2], sys.argv[3], ms("backbone"), ms("text"), ms("encoder"),
                 ms("decoder"), ms("end_to_end"), f"{int(sys.argv[3]) / r['end_to_end']['median_s']:.2f}"]))
EOF
}

glint_step() { # dtype batch
    local json="$out/glint-$1-b$2.json"
    timeout "$step_timeout" "$bin/glint" bench --model "$model_dir" --image "$image" --device wgpu \
        --precision "$1" --batch-size "$2" --runs "$runs" --json "$json" || return 1
    python3 - "$json" "$1" "$2" >>"$summary" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
st = {s["stage"]: s["median_ms"] for s in r["stages"]}
print("\t".join(["glint-wgpu", sys.argv[2], sys.argv[3]] +
                [f"{st[k]:.1f}" for k in ["backbone", "text", "encoder", "decoder", "total"]] +
                [f"{r['images_per_second']:.2f}"]))
EOF
}

profile_step() { # dtype batch: one run under CubeCL's kernel profiler
    rm -f /tmp/cubecl.log
    CUBECL_DEBUG_LOG=/tmp/cubecl.log CUBECL_DEBUG_OPTION=profile timeout "$step_timeout" "$bin/glint" bench \
        --model "$model_dir" --image "$image" --device wgpu --precision "$1" --batch-size "$2" --runs 1
    python3 benches/cubecl_profile.py /tmp/cubecl.log --top 30 | tee "$out/profile-$1-b$2.txt"
}

status=0
for step in $plan; do
    stamp "$step"
    case "$step" in
        tests) GLINT_REQUIRE_WGPU=1 "$bin/gpu-test" --nocapture || status=1 ;;
        torch-*) IFS=- read -r _ dtype batch <<<"$step"; torch_step "$dtype" "${batch#b}" || status=1 ;;
        glint-*) IFS=- read -r _ dtype batch <<<"$step"; glint_step "$dtype" "${batch#b}" || status=1 ;;
        profile-*) IFS=- read -r _ dtype batch <<<"$step"; profile_step "$dtype" "${batch#b}" || status=1 ;;
        *) echo "unknown step $step" >&2; status=1 ;;
    esac
done

stamp "done; median of $runs runs after a warm-up, image $size"
column -t -s $'\t' "$summary"
exit "$status"
