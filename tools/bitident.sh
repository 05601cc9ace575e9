#!/usr/bin/env bash
# Are the training results of two builds byte-identical? Builds commit BASE (default c78e7c9, the last
# commit before the op-module refactor) in a git worktree, and NEW (default: this working tree), then
# trains with both: the five presets, configs/max_norm.toml, configs/proximal_l1.toml and
# configs/two_conv.toml, each with --kernel-set cpu and --kernel-set gpu, `train --epochs 1
# --limit-train 2000 --save`, and compares the saved weights and Adam moments byte for byte
# (tools/same_tensors.py). Needs the dataset (`apt-get install dataset-fashion-mnist`) and an adapter.
#   tools/bitident.sh [BASE [NEW]]        NEW: a commit, or . for the working tree
# Outputs under target/bitident/. Exit status 0 when all 16 pairs are identical.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
base=${1:-c78e7c9}
new=${2:-.}
work=$root/target/bitident
mkdir -p "$work"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

# the clampnet binary of commit $1 (or of the working tree for "."), built once per commit
binary() {
    if [ "$1" = . ]; then
        cargo build --release --quiet --bin clampnet >&2
        echo "$root/target/release/clampnet"
        return
    fi
    local sha
    sha=$(git rev-parse "$1^{commit}")
    if [ ! -x "$work/clampnet-$sha" ]; then
        local src=$work/src-$sha
        rm -rf "$src"
        git worktree prune
        git worktree add --quiet --detach "$src" "$sha" >&2
        (cd "$src" && CARGO_TARGET_DIR=$work/target cargo build --release --quiet --bin clampnet >&2)
        cp "$work/target/release/clampnet" "$work/clampnet-$sha"
        git worktree remove --force "$src"
    fi
    echo "$work/clampnet-$sha"
}

a=$(binary "$base")
b=$(binary "$new")
echo "base: $base ($a)"
echo "new:  $new ($b)"
runs=(
    "--preset none" "--preset l1l2" "--preset clip" "--preset unitnorm" "--preset combo"
    "--config $root/configs/max_norm.toml" "--config $root/configs/proximal_l1.toml"
    "--config $root/configs/two_conv.toml"
)
failed=0
for set in cpu gpu; do
    for run in "${runs[@]}"; do
        tag=$(echo "$run $set" | sed 's|.*/||; s|--preset ||; s|\.toml||; s| |-|g')
        for side in a b; do
            bin=${!side}
            # shellcheck disable=SC2086
            "$bin" train $run --kernel-set "$set" --epochs 1 --limit-train 2000 --quiet \
                --save "$work/$tag.$side.safetensors" 2>"$work/$tag.$side.log" ||
                { echo "$tag: $side failed:"; cat "$work/$tag.$side.log"; exit 2; }
        done
        printf '%-22s ' "$tag"
        python3 tools/same_tensors.py "$work/$tag.a.safetensors" "$work/$tag.b.safetensors" || failed=1
    done
done
exit $failed
