#!/usr/bin/env bash
# GPU check, one prepared run with its own time limit (GPU_CHECK_LIMIT seconds, default 780:
# it fits a 15-minute lease): (1) the CUDA-only paths — bf16 autocast, channels-last, pinned
# non-blocking transfers, torch.compile — for the paper's six encoders (scripts/gpu_paths.py);
# (2) the benchmark's overhead ratio; (3) the whole paper profile on the bundled cohort, stage
# by stage, with ImageNet weights where this machine has them (else random init, labelled so).
# The same sequence on a CPU at a tiny size is tests/test_paper_profile.py. Usage:
#   scripts/gpu_check.sh [OUTPUT_DIR]        (default: a temporary folder; nothing is committed)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-$(mktemp -d)}"
./run_all.sh --setup
PY=.venv/bin/python
[ -n "${CONDA_PREFIX:-}" ] && [ -x "$CONDA_PREFIX/bin/python" ] && "$CONDA_PREFIX/bin/python" -c "import phyllodes" 2>/dev/null && PY="$CONDA_PREFIX/bin/python"
"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "gpu_check.sh needs a CUDA GPU"
print("GPU:", torch.cuda.get_device_name(), "| torch", torch.__version__)
PY
limit="${GPU_CHECK_LIMIT:-780}"
t_start=$(date +%s)
left() { echo $(( limit - ($(date +%s) - t_start) )); }
echo "== CUDA-only paths of the six paper encoders"
timeout "$(left)" "$PY" scripts/gpu_paths.py
echo "== benchmark (paper profile, multimodal, default encoder)"
timeout "$(left)" "$PY" -m phyllodes.ops.bench --profile paper --device cuda --steps 30 \
    --set pretrained=if_cached --json "$out/bench_paper.json" || echo "benchmark: stopped"
echo "== the whole paper profile, stage by stage"
start=$(date +%s)
timeout "$(left)" "$PY" -m phyllodes notebooks --profile paper --device cuda --output "$out" \
    --set pretrained=if_cached || echo "paper profile: stopped by the time limit or a failure"
echo "paper profile wall time: $(( $(date +%s) - start )) s  (outputs in $out)"
