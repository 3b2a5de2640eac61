"""The CPU kernels are pinned when the package is imported (phyllodes.kernels), and every run's
id says which kernels computed it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from phyllodes import kernels

x86 = pytest.mark.skipif(not kernels.is_x86(), reason="kernels are pinned on x86-64 only")


def _python(code: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in kernels.PINNED and k != kernels.SWITCH}
    out = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True,
                         text=True, env={**clean, **env}, check=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "stderr": out.stderr}


REPORT = ("import json, os, torch; from phyllodes import kernels; "
          "print(json.dumps({'tag': kernels.tag(), 'aten': torch.backends.cpu."
          "get_cpu_capability(), 'env': {k: os.environ.get(k) for k in kernels.PINNED}}))")


@x86
def test_importing_the_package_pins_the_kernels_before_torch_loads():
    r = _python("import phyllodes; " + REPORT)
    assert r["tag"] == "pinned-avx2"
    assert r["env"] == kernels.PINNED
    assert r["aten"] == "AVX2"           # ATen read the pinned dispatch


@x86
def test_the_native_switch_keeps_the_processors_kernels_and_says_so():
    r = _python("import phyllodes; " + REPORT, PHYLLODES_KERNELS="native")
    assert r["tag"] == "native"
    assert r["env"] == {k: None for k in kernels.PINNED}


@x86
def test_torch_imported_first_is_tagged_late_with_a_warning_naming_the_fix():
    r = _python("import torch, phyllodes; " + REPORT)
    assert r["tag"] == "late"
    assert "Import phyllodes first" in r["stderr"] and "MKL_CBWR=COMPATIBLE" in r["stderr"]
    # exported before Python starts, the pinning holds whatever is imported first
    r = _python("import torch, phyllodes; " + REPORT, **kernels.PINNED)
    assert r["tag"] == "pinned-avx2" and r["aten"] == "AVX2"


@x86
def test_a_user_value_wins_and_is_recorded():
    r = _python("import phyllodes; " + REPORT, ONEDNN_MAX_CPU_ISA="AVX512_CORE")
    assert r["tag"].startswith("custom:") and "ONEDNN_MAX_CPU_ISA=AVX512_CORE" in r["tag"]


#: parameters of a random-init EfficientNet-Lite0 after six AdamW steps on a fixed batch, as the
#: pinned kernels computed them, per processor vendor: on an AMD EPYC Zen 4 (AVX-512) and Zen 3
#: (AVX2 only) alike, 2 threads, torch 2.14.1 / timm in requirements.txt. The committed tables
#: are checked exactly on the vendor that made them (phyllodes.ops.check.machine_note).
PINNED_DIGESTS = {"AuthenticAMD": "817f39377015b712"}

STEPS = """
import hashlib, phyllodes, torch, timm
torch.set_num_threads(2)
torch.manual_seed(0)
m = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1)
head = torch.nn.Linear(7, 1)
opt = torch.optim.AdamW(list(m.parameters()) + list(head.parameters()), lr=1e-3)
x = torch.randn(8, 3, 96, 96); c = torch.randn(8, 7); y = torch.randint(0, 2, (8,)).float()
for _ in range(6):
    opt.zero_grad()
    out = m(x).squeeze(1) + head(c).squeeze(1)
    torch.nn.functional.binary_cross_entropy_with_logits(out, y).backward()
    opt.step()
h = hashlib.sha256()
for p in m.state_dict().values():
    h.update(p.detach().numpy().tobytes())
import json; print(json.dumps({"digest": h.hexdigest()[:16]}))
"""


@x86
def test_pinned_kernels_compute_the_recorded_numbers():
    """The claim behind the check (./run_all.sh --check) on a small scale: training steps give
    the same bits here as on the machine that recorded them. If this fails, this processor's
    pinned kernels round differently and the check will fail too (say so in the issue, with
    `lscpu`)."""
    r = _python(STEPS)
    vendor = kernels.machine()["vendor"]
    if vendor not in PINNED_DIGESTS:
        pytest.skip(f"no digest recorded for {vendor} processors; this one computed "
                    f"{r['digest']} (record it in PINNED_DIGESTS once its check passes)")
    assert r["digest"] == PINNED_DIGESTS[vendor], (
        f"six pinned training steps gave {r['digest']}, recorded {PINNED_DIGESTS[vendor]}")


def test_the_machine_record_names_the_processor():
    m = kernels.machine()
    assert set(m) == {"vendor", "model", "family", "model_number", "isa"} and m["vendor"]
    if kernels.is_x86() and os.path.exists("/proc/cpuinfo"):
        assert m["vendor"] in ("AuthenticAMD", "GenuineIntel", "HygonGenuine")
        assert "avx2" in m["isa"] and isinstance(m["family"], int)
    r = kernels.record()
    assert r["machine"] == m and r["kernels"] == kernels.tag() and r["torch"]
