#!/usr/bin/env bash
# Print the path of the clampnet binary of a commit, building it first in a git worktree under
# target/bitident/ (once per commit); "." builds and names this working tree's binary.
#   tools/build_at.sh COMMIT|.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/target/bitident
mkdir -p "$work"
if [ "${1:-.}" = . ]; then
    cargo build --release --quiet --bin clampnet >&2
    echo "$root/target/release/clampnet"
    exit 0
fi
sha=$(git rev-parse "$1^{commit}")
if [ ! -x "$work/clampnet-$sha" ]; then
    src=$work/src-$sha
    rm -rf "$src"
    git worktree prune
    git worktree add --quiet --detach "$src" "$sha" >&2
    (cd "$src" && CARGO_TARGET_DIR=$work/target cargo build --release --quiet --bin clampnet >&2)
    cp "$work/target/release/clampnet" "$work/clampnet-$sha"
    git worktree remove --force "$src"
fi
echo "$work/clampnet-$sha"
