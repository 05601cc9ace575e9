#!/usr/bin/env bash
# Are the training results of two builds byte-identical? Builds commit BASE (default c78e7c9, the last
# commit before the op-module refactor) in a git worktree, and NEW (default: this working tree), then
# trains with both: the five presets, configs/max_norm.toml, configs/proximal_l1.toml and
# configs/two_conv.toml, and three configs derived here that add the optimizer's other settings
# (clipnorm + weight_decay, global_clipnorm, clipvalue), each with --kernel-set cpu and --kernel-set gpu,
# `train --epochs 1 --limit-train 2000 --save`, and compares the saved weights and Adam moments byte
# for byte (tools/same_tensors.py), and each build's `eval --json` of the same checkpoint. Needs the
# dataset (`apt-get install dataset-fashion-mnist`) and an adapter.
#   tools/bitident.sh [BASE [NEW]]        NEW: a commit, or . for the working tree
# Outputs under target/bitident/. Exit status 0 when all 22 pairs are identical.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
base=${1:-c78e7c9}
new=${2:-.}
work=$root/target/bitident
mkdir -p "$work"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

a=$(tools/build_at.sh "$base")
b=$(tools/build_at.sh "$new")
echo "base: $base ($a)"
echo "new:  $new ($b)"
# a shipped config with settings added to its [optimizer] section
derive() {
    sed "s/^\[optimizer\]/[optimizer]\n$2/" "$root/configs/$1.toml" >"$work/$3.toml"
    echo "--config $work/$3.toml"
}
runs=(
    "--preset none" "--preset l1l2" "--preset clip" "--preset unitnorm" "--preset combo"
    "--config $root/configs/max_norm.toml" "--config $root/configs/proximal_l1.toml"
    "--config $root/configs/two_conv.toml"
    "$(derive l1l2 'clipnorm = 1.0\nweight_decay = 0.004' l1l2_clipnorm_decay)"
    "$(derive combo 'global_clipnorm = 0.5' combo_global_clipnorm)"
    "$(derive proximal_l1 'clipvalue = 0.01' proximal_clipvalue)"
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
        printf '%-26s ' "$tag"
        python3 tools/same_tensors.py "$work/$tag.a.safetensors" "$work/$tag.b.safetensors" || failed=1
        # and inference: `eval --json` of the same checkpoint, through each build's forward pass
        for side in a b; do
            bin=${!side}
            "$bin" eval "$work/$tag.a.safetensors" --kernel-set "$set" --limit-test 1000 --json \
                >"$work/$tag.$side.eval.json" 2>/dev/null
        done
        cmp -s "$work/$tag.a.eval.json" "$work/$tag.b.eval.json" ||
            { echo "  eval --json differs"; failed=1; }
    done
done
exit $failed
