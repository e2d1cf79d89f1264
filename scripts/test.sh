#!/usr/bin/env bash
# The test command: every unit, integration and end-to-end test of the
# workspace. End-to-end tests build the example programs in release mode
# (with frame pointers, see .cargo/config.toml) and run them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
