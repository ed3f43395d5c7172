#!/usr/bin/env bash
# VNN-COMP: run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT
# writes sat (with the counterexample), unsat, unknown or timeout to RESULTS_FILE
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/nnspec vnncomp run "$2" "$3" "$4" "$5" "$6"
