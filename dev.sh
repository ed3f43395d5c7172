#!/usr/bin/env bash
# One entry point for the README's two commands:
#   bash dev.sh demo   set up .venv (idempotent) and run `nnspec check specs/` on the bundled demo model
#   bash dev.sh test   set up .venv (idempotent) and run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"

setup() {
  # The stamp holds a hash of everything that decides what is installed; a match means nothing to do.
  local want have
  want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
  have="$(cat .venv/.nnspec-stamp 2>/dev/null || true)"
  if [[ -x .venv/bin/python && "$want" == "$have" ]]; then return 0; fi
  echo "dev.sh: setting up .venv (first time takes a few minutes)" >&2
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  if ! { .venv/bin/python -m pip install -q --upgrade pip && \
         .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"; } > .venv/install.log 2>&1; then
    grep -v '^WARNING: Location' .venv/install.log | tail -30 >&2
    echo "dev.sh: installation failed (full log: .venv/install.log)" >&2
    exit 1
  fi
  echo "$want" > .venv/.nnspec-stamp
}

case "${1:-}" in
  demo)
    setup
    mkdir -p nnspec-out
    set +e
    .venv/bin/nnspec check specs/ --json nnspec-out/results.json --html nnspec-out/report.html \
      --junit nnspec-out/junit.xml "${@:2}"
    rc=$?
    set -e
    echo "report: $(pwd)/nnspec-out/report.html (exit code $rc)"
    exit $rc ;;
  test)
    setup
    exec .venv/bin/python -m pytest "${@:2}" ;;
  *)
    echo "usage: bash dev.sh demo|test [extra args]" >&2; exit 2 ;;
esac
