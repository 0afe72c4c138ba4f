#!/usr/bin/env bash
# The Debian package, by `cargo deb` (metadata in Cargo.toml, scripts in packaging/debian/):
#   packaging/build-deb.sh           this machine's architecture, release build
#   packaging/build-deb.sh --arm64   the gate boxes' (aarch64), cross-built (cross-aarch64.sh)
#   packaging/build-deb.sh --debug   from the debug binary `cargo test` built (CI's install test)
#   packaging/build-deb.sh --company [--debug]   the company side's package (gatehouse-company)
# Needs cargo-deb (`cargo install cargo-deb --locked`). Prints the .deb's path.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || { echo "$0: cargo install cargo-deb --locked" >&2; exit 1; }
out=target/debian
mkdir -p "$out"
if [ "${1:-}" = --company ]; then
  if [ "${2:-}" = --debug ]; then
    cargo build --locked --quiet -p gatehouse-company --bin gatehouse-company
    cargo deb -p gatehouse-company --no-build --profile dev --strip --fast --output "$out" -q
  else
    cargo deb -p gatehouse-company --locked --output "$out" -q
  fi
  exit 0
fi
case "${1:-}" in
  --arm64)
    packaging/cross-aarch64.sh
    CARGO_TARGET_DIR=target/cross cargo deb -p gatehouse --no-build --no-strip --locked \
      --target aarch64-unknown-linux-gnu --output "$out" -q
    ;;
  --debug)
    cargo build --locked --quiet -p gatehouse --bin gatehouse
    cargo deb -p gatehouse --no-build --profile dev --strip --fast --output "$out" -q
    ;;
  "")
    cargo deb -p gatehouse --locked --output "$out" -q
    ;;
  *)
    echo "usage: $0 [--arm64 | --debug]" >&2
    exit 2
    ;;
esac
