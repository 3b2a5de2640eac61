#!/usr/bin/env bash
# Reproduce the study: set up the environment (first run only), then execute every numbered
# notebook in notebooks/ in order with papermill. See README.md.
#
#   ./run_all.sh                      the whole study (profile paper with CUDA, else quick)
#   ./run_all.sh --tests              set up, then run the test suite (what CI runs)
#   ./run_all.sh --profile smoke --cohort data/private/mgh --device cuda --output /scratch/out
#   ./run_all.sh --only 01,03         only these notebooks
#   ./run_all.sh --weights-dir DIR    encoder weights files, one per encoder (offline GPU nodes)
#   ./run_all.sh --set NAME=VALUE     any profile setting, repeatable (e.g. --set pretrained=none)
#   ./run_all.sh --report             rebuild report/<cohort>/index.html from existing outputs
#   ./run_all.sh --check              rerun the study (quick) in a scratch folder and compare
#                                     its tables with the committed ones (what CI runs too)
#   ./run_all.sh --setup              only create/refresh the environment
set -euo pipefail
cd "$(dirname "$0")"

profile="" cohort="breast-lesions-usg" device="auto" output="" only="" mode="notebooks" seed=0
weights_dir=""
settings=()
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --cohort) cohort="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --output) output="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --weights-dir) weights_dir="$2"; shift 2 ;;
    --set) settings+=(--set "$2"); shift 2 ;;
    --tests) mode="tests"; shift ;;
    --report) mode="report"; shift ;;
    --check) mode="check"; shift ;;
    --setup) mode="setup"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_all.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

# --- environment: an active conda env built from environment.yml, else ./.venv ----------------
stamp_of() { cat requirements.txt pyproject.toml | sha256sum | cut -c1-16; }
if [ -n "${CONDA_PREFIX:-}" ] && "$CONDA_PREFIX/bin/python" -c "import phyllodes, papermill, timm" 2>/dev/null; then
  PY="$CONDA_PREFIX/bin/python"
  echo "run_all.sh: using the active conda environment $CONDA_PREFIX"
else
  PY=".venv/bin/python"
  if [ ! -x "$PY" ]; then
    echo "run_all.sh: creating the virtual environment .venv (first run only)"
    "${PYTHON:-python3}" -m venv .venv
  fi
  if [ "$(cat .venv/.phyllodes-installed 2>/dev/null)" != "$(stamp_of)" ]; then
    echo "run_all.sh: installing the pinned packages of requirements.txt (first run only, a few minutes)"
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -r requirements.txt
    "$PY" -m pip install --quiet --no-deps -e .
    stamp_of > .venv/.phyllodes-installed
  fi
fi

case "$mode" in
  setup) echo "run_all.sh: environment ready ($PY)"; exit 0 ;;
  report)
    args=(--cohort "$cohort")
    [ -n "$output" ] && args+=(--output "$output")
    [ -n "$profile" ] && args+=(--profile "$profile")
    exec "$PY" -m phyllodes report "${args[@]}" ;;
  check)
    args=()
    [ -n "$output" ] && args+=(--output "$output")
    exec "$PY" -m phyllodes check "${args[@]}" ;;
  tests)
    test_stamp=$(sha256sum requirements-test.txt | cut -c1-16)
    if [ "$PY" = ".venv/bin/python" ] && [ "$(cat .venv/.phyllodes-test-installed 2>/dev/null)" != "$test_stamp" ]; then
      echo "run_all.sh: installing the test extras of requirements-test.txt (first run only)"
      "$PY" -m pip install --quiet -r requirements-test.txt
      echo "$test_stamp" > .venv/.phyllodes-test-installed
    fi
    echo "run_all.sh: lint (ruff check, configured in pyproject.toml)"
    "$PY" -m ruff check .
    echo "run_all.sh: the package's layers (lint-imports, contracts in pyproject.toml)"
    "$(dirname "$PY")/lint-imports" --no-cache
    exec "$PY" -m pytest -q tests ;;
esac

if [ -z "$profile" ]; then
  profile=$("$PY" -c "from phyllodes.profiles import default_profile_name as d; print(d())")
  echo "run_all.sh: no --profile given; picked '$profile' ($( [ "$profile" = paper ] && echo 'CUDA is available' || echo 'no CUDA GPU found'))"
fi
args=(--profile "$profile" --cohort "$cohort" --device "$device" --seed "$seed")
[ -n "$output" ] && args+=(--output "$output")
[ -n "$only" ] && args+=(--only "$only")
[ -n "$weights_dir" ] && args+=(--weights-dir "$weights_dir")
exec "$PY" -m phyllodes notebooks "${args[@]}" "${settings[@]}"
