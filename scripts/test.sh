#!/usr/bin/env bash
# The test command: every unit, integration and end-to-end test of the
# workspace. End-to-end tests build the example programs in release mode
# (with frame pointers, see .cargo/config.toml) and run them.
set -euo pipefail
cd "$(dirname "$0")/.."
# What the export tests read our outputs with, installed into the tree on
# first use (the Debian packages they need, nodejs, npm and python3-venv,
# are installed by .ci/run).
# memlab's heap snapshot parser, pinned by tests/node/package-lock.json
# (without the variable, a dependency tries to download a browser).
if [ ! -d tests/node/node_modules/@memlab/heap-analysis ]; then
  echo "test: npm ci in tests/node"
  (cd tests/node && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
# DuckDB from PyPI, pinned, in a virtual environment under the target
# directory (where tests/tests/export_parquet.rs looks for it): it runs
# the dataset queries of analyze/EXPORTS.md on toparquet's output.
python_env="${CARGO_TARGET_DIR:-target}/python"
if ! "$python_env/bin/python3" -c 'import duckdb, sys; sys.exit(duckdb.__version__ != "2.0.1")' 2>/dev/null; then
  echo "test: pip install duckdb==2.0.1 into $python_env"
  python3 -m venv "$python_env"
  "$python_env/bin/pip" install --quiet --disable-pip-version-check duckdb==2.0.1
fi

cargo test --workspace --locked "$@"
