#!/usr/bin/env bash
# The test command (README, CI): installs what the tests need when it is missing, then runs them.
#   - Mesa lavapipe (software Vulkan) and the Vulkan loader: the GPU tests run on it when no GPU is present
#   - dataset-fashion-mnist: the real data (tests fall back to the embedded sample where it suffices)
# Extra arguments go to `cargo test` (e.g. scripts/test.sh --test kernels).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || [ -n "$(ls /usr/share/vulkan/icd.d/lvp_icd.*.json 2>/dev/null)" ] || need+=(mesa-vulkan-drivers)
ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' || need+=(libvulkan1)
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    echo "installing: ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Mesa prints a harmless "XDG_RUNTIME_DIR is invalid" line per process without this.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
# Release build: the GPU tests drive whole training steps; the suite takes a few minutes on 2 cores.
exec cargo test --release "$@"
