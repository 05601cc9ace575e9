#!/usr/bin/env bash
# The test command (README, CI): installs what the tests need when it is missing, then runs them twice,
# on the two headless Mesa backends: Vulkan (lavapipe) and GL (llvmpipe through EGL), and the trainer-level
# suites a third time with the GPU kernel set.
#   - mesa-vulkan-drivers + libvulkan1: the software Vulkan adapter and the loader
#   - libegl1 + libegl-mesa0 + libgl1-mesa-dri: the software GL adapter through EGL
#   - dataset-fashion-mnist: the real data (tests fall back to the embedded sample where it suffices)
# Arguments go to `cargo test` and select a single run on the default backend
# (e.g. scripts/test.sh --test layers); set WGPU_BACKEND to choose it.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' || need+=(libvulkan1)
ldconfig -p 2>/dev/null | grep -q 'libEGL\.so\.1' || need+=(libegl1)
ls /usr/share/glvnd/egl_vendor.d/50_mesa.json >/dev/null 2>&1 || need+=(libegl-mesa0)
ls /usr/lib/*/dri/swrast_dri.so >/dev/null 2>&1 || need+=(libgl1-mesa-dri)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    echo "installing: ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Mesa prints a harmless "XDG_RUNTIME_DIR is invalid" line per process without this.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
# Release build: the GPU tests drive whole training steps.
if [ $# -gt 0 ]; then
    exec cargo test --release "$@"
fi
echo "== tests on the default adapter (Vulkan: lavapipe when no GPU is present)"
cargo test --release
echo "== tests on the GL backend (llvmpipe through EGL)"
WGPU_BACKEND=gl cargo test --release
# The kernel set for GPUs (chosen by adapter type, so never by default here): the whole-trainer suites
# against the CPU twin and Keras' fixtures again, with the GPU-shaped kernels on lavapipe, and the
# sweeps (trials equal to solo runs, kill -9) in that kernel set too.
echo "== trainer, restriction, Keras-parity and sweep tests with the GPU kernel set (lavapipe)"
CLAMPNET_KERNEL_SET=gpu cargo test --release --test trainer --test restrictions --test keras_parity --test keras_files \
    --test sweep
