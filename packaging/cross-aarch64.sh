#!/usr/bin/env bash
# Builds gatehouse for the gate boxes' CPU (aarch64) on this x86_64 machine with Debian's own
# Rust toolchain and its aarch64 standard library — nothing downloaded but Debian packages:
#   dpkg --add-architecture arm64
#   apt-get install rustc-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross
# (done here when missing and run as root). `--debug` builds the dev profile (what CI does so
# that no dependency that cannot cross-compile ever lands); otherwise release.
# Output: target/cross/aarch64-unknown-linux-gnu/{release,debug}/gatehouse.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=(--release)
[ "${1:-}" = --debug ] && profile=()

need=()
[ -x /usr/bin/rustc ] || need+=(rustc-web)
[ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ] || need+=(libstd-rust-web-dev:arm64)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "$0: needs Debian packages ${need[*]} (and dpkg --add-architecture arm64); run as root" >&2
    exit 1
  fi
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR=target/cross
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
cargo build --locked --target aarch64-unknown-linux-gnu -p gatehouse --bin gatehouse "${profile[@]}"
