#!/usr/bin/env bash
# Runs a fuzz target with libFuzzer on the stable toolchain (coverage instrumentation via
# sancov; no nightly, no sanitizers). With nightly, `cargo +nightly fuzz run TARGET` does the same
# with AddressSanitizer.
#   fuzz/run.sh device_json 600      # target, seconds
set -euo pipefail
cd "$(dirname "$0")"
target=${1:-device_json}; secs=${2:-60}
triple=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions" \
  cargo build --release --target "$triple" --bin "$target"
# New inputs go to corpus/ (not kept in git); seeds/ holds what the simulators send (kept).
mkdir -p "corpus/$target"
seeds=()
[ -d "seeds/$target" ] && seeds=("seeds/$target")
"./target/$triple/release/$target" -max_total_time="$secs" "corpus/$target" "${seeds[@]}"
