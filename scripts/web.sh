#!/usr/bin/env bash
# The browser build: `scripts/web.sh build` compiles web/ (clampnet's library and its wasm-bindgen glue)
# to wasm and writes web/pkg/; `scripts/web.sh serve [PORT]` serves web/ on 127.0.0.1 (default 8000):
# open http://127.0.0.1:8000/ in a browser with WebGPU.
# What it needs, installed when missing (Debian, as root or with sudo; crates.io): rustc-web, cargo-web,
# rust-web-src (Debian's Rust whose LLVM targets wasm32; std is rebuilt with -Zbuild-std), lld-22
# (wasm-ld), and wasm-bindgen-cli at the version Cargo.lock pins. See ../shared/WEB.md's recipe.
# Exit status 3: what it needs cannot be installed here (tests/web.rs then skips, saying why).
set -euo pipefail
cd "$(dirname "$0")/.."
# where `cargo install` puts wasm-bindgen
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

need() {
    local pkgs=() p
    for p in rustc-web cargo-web rust-web-src lld-22; do
        dpkg -s "$p" >/dev/null 2>&1 || pkgs+=("$p")
    done
    if [ ${#pkgs[@]} -gt 0 ]; then
        # never waits for a password: without root or password-less sudo, say what is missing
        if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi
        echo "installing: ${pkgs[*]}" >&2
        if ! { $SUDO apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null; }; then
            echo "cannot install ${pkgs[*]} here (needs root or password-less sudo, and Debian's archive)" >&2
            exit 3
        fi
    fi
    local want
    want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
    if ! command -v wasm-bindgen >/dev/null || [ "$(wasm-bindgen --version | awk '{print $2}')" != "$want" ]; then
        echo "installing wasm-bindgen-cli $want (the version Cargo.lock pins; about 3 minutes)" >&2
        cargo install -q wasm-bindgen-cli --version "$want" || {
            echo "cannot install wasm-bindgen-cli $want from crates.io here" >&2
            exit 3
        }
    fi
}

case "${1:-build}" in
build)
    need
    . scripts/wasm-env.sh
    "$WASM_CARGO" build --release --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort \
        --target-dir target/wasm -p clampnet-web --lib
    wasm-bindgen --target web --no-typescript --out-dir web/pkg \
        target/wasm/wasm32-unknown-unknown/release/clampnet_web.wasm
    echo "built web/pkg/ ($(du -sh web/pkg | cut -f1)); serve it: scripts/web.sh serve" >&2
    ;;
serve)
    [ -f web/pkg/clampnet_web.js ] || { echo "web/pkg/ is missing: scripts/web.sh build first" >&2; exit 1; }
    port="${2:-8000}"
    echo "open http://127.0.0.1:$port/ in a browser with WebGPU (Ctrl-C stops)" >&2
    exec python3 -m http.server "$port" --bind 127.0.0.1 --directory web
    ;;
*)
    echo "usage: scripts/web.sh build | serve [PORT]" >&2
    exit 2
    ;;
esac
