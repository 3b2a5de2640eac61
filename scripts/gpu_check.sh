#!/usr/bin/env bash
# GPU check: the paper profile on the bundled cohort on one GPU, with the wall time of each
# notebook stage and the benchmark's overhead ratio. Needs a CUDA GPU and timm's ImageNet
# weights (internet once, or a filled ~/.cache/huggingface). Usage:
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
echo "== benchmark (paper profile, multimodal, default encoder)"
"$PY" -m phyllodes.bench --profile paper --device cuda --steps 30 --json "$out/bench_paper.json"
echo "== the whole paper profile, stage by stage"
start=$(date +%s)
"$PY" -m phyllodes notebooks --profile paper --device cuda --output "$out"
echo "paper profile wall time: $(( $(date +%s) - start )) s  (outputs in $out)"
