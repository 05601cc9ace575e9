# Sourced: the environment of the browser build (../shared/WEB.md's recipe). Debian's rustc-web (its
# LLVM targets wasm32) rebuilds std from rust-web-src (-Zbuild-std); lld's wasm-ld links.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=/usr/lib/llvm-22/bin/wasm-ld
WASM_CARGO=/usr/bin/cargo
export CARGO_PROFILE_RELEASE_DEBUG=0
