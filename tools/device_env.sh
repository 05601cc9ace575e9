# Sourced by the scripts for a lent GPU (tools/gpu_sweep.sh, tools/gpu_bench.sh): `prepare` (here, once)
# builds a stripped release binary into .device/ (git-ignored) with the dataset and the Vulkan/EGL loader
# packages the device machine lacks, and exits; `run` (there, with .device carried) installs the loaders,
# points Vulkan at NVIDIA's ICD and sets BIN, CLAMPNET_DATA, RUST_LOG, XDG_RUNTIME_DIR, PY_TORCH, PY_JAX
# (the device's python3 has torch and jax). Without .device (a dry run here) it uses target/release.
case "${1:-}" in
prepare)
    mkdir -p .device
    grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >>.git/info/exclude
    CARGO_PROFILE_RELEASE_DEBUG=false cargo build --release --quiet --target-dir target/device
    strip -o .device/clampnet target/device/release/clampnet
    cp -r /usr/share/datasets/fashion-mnist .device/
    (cd .device && apt-get download libvulkan1 libegl1 libglvnd0 >/dev/null)
    git rev-parse HEAD >.device/commit
    du -sh .device
    exit 0
    ;;
run) ;;
*) echo "usage: tools/$2.sh prepare|run" >&2; exit 2 ;;
esac
BIN=target/release/clampnet
DATA=/usr/share/datasets/fashion-mnist
if [ -x .device/clampnet ]; then
    BIN=.device/clampnet
    # the binary is the commit `prepare` ran at: say so when the tree moved on
    [ "$(cat .device/commit 2>/dev/null)" = "$(git rev-parse HEAD 2>/dev/null)" ] ||
        echo "warning: .device/clampnet was built at $(cat .device/commit 2>/dev/null || echo 'an unknown commit'), not at this tree's HEAD: rerun prepare" >&2
    DATA=$PWD/.device/fashion-mnist
    for f in .device/*.deb; do dpkg -x "$f" /; done
    ldconfig
    [ -e /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] &&
        export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
export CLAMPNET_DATA=$DATA RUST_LOG=warn XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
PY_TORCH=${PY_TORCH:-python3} PY_JAX=${PY_JAX:-python3}
