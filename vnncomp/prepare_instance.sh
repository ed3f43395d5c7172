#!/usr/bin/env bash
# VNN-COMP: prepare_instance.sh v1 CATEGORY ONNX VNNLIB  (reads the query, converts the network)
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/nnspec vnncomp prepare "$2" "$3" "$4"
