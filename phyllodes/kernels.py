"""The CPU kernels a run computes with, pinned so that the study gives the same numbers on
every x86 machine.

PyTorch's CPU wheels choose their kernels by the processor they find: MKL takes a vendor- and
ISA-specific path for matrix products, oneDNN JIT-compiles convolutions for the widest vector
unit (AVX-512, AMX), ATen's own kernels dispatch on the same. Each rounds differently, and
training amplifies a difference of 1e-7 into AUCs 1e-4 to 1e-2 apart: the committed tables came
out different on an AMD EPYC (Zen 4) and on an Intel Xeon, from the same code and seeds. So
the package pins, before torch is loaded:

- ``MKL_CBWR=COMPATIBLE``: MKL's conditional numerical reproducibility, the code path that is
  the same on every x86 processor (Intel's documented guarantee);
- ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN's kernels for AVX2, which every x86 CPU of the last ten
  years has, instead of what each CPU has beyond it;
- ``ATEN_CPU_CAPABILITY=avx2``: the same for ATen's vectorised kernels.

Measured here (2 cores, EfficientNet-Lite0 training steps), the pinned kernels are as fast as
the native ones within noise. A value set in the environment before the package is imported
wins (e.g. ``PHYLLODES_KERNELS=native`` to keep the processor's own kernels); :func:`tag` says
what is in effect and is part of every run's id (:func:`phyllodes.train.runs.run_config`), so
runs computed with other kernels are never mixed with these. Only x86-64 is pinned: other
processors (Apple silicon, ARM servers) have one kernel set each, recorded as such.
"""

from __future__ import annotations

import os
import platform
import sys
import warnings

#: the environment that pins the kernels (see the module docstring)
PINNED = {"MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
#: set to ``native`` to keep the processor's own kernels (runs then get other ids)
SWITCH = "PHYLLODES_KERNELS"

_state: dict[str, str] = {}


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "x64")


def pin() -> None:
    """Set :data:`PINNED` in the environment unless the user chose otherwise; called when the
    package is imported. Pinning after torch has run a kernel has no effect: then the tag says
    so (``late``) and a warning names the fix."""
    if _state:
        return
    if not is_x86():
        _state["mode"] = f"native-{platform.machine().lower() or 'unknown'}"
        return
    if os.environ.get(SWITCH, "").strip().lower() == "native":
        _state["mode"] = "native"
        return
    preset = {k: os.environ[k] for k in PINNED if k in os.environ}
    if "torch" in sys.modules and set(preset) != set(PINNED):
        _state["mode"] = "late"
        warnings.warn(
            "phyllodes: torch was imported before phyllodes, so the CPU kernels could not be "
            "pinned (runs get a 'late' kernel tag and ids of their own). Import phyllodes "
            "first, or export " + " ".join(f"{k}={v}" for k, v in PINNED.items())
            + " before starting Python.", stacklevel=3)
        return
    for key, value in PINNED.items():
        os.environ.setdefault(key, value)
    if any(os.environ[k] != v for k, v in PINNED.items()):
        _state["mode"] = "custom:" + ",".join(f"{k}={os.environ[k]}" for k in PINNED)
    else:
        _state["mode"] = "pinned-avx2"


def tag() -> str:
    """What the CPU kernels are: ``pinned-avx2`` (the study's), ``native``, ``late``,
    ``custom:...`` or ``native-<machine>`` off x86. A pinned ATen dispatch that torch does not
    report as AVX2 (the variable was read before it was set) is tagged ``late``."""
    pin()
    mode = _state["mode"]
    if mode == "pinned-avx2" and "torch" in sys.modules:
        import torch
        if torch.backends.cpu.get_cpu_capability().upper() != "AVX2":
            return "late"
    return mode


def pin_compiler() -> None:
    """``torch.compile``'s CPU code (Inductor's C++ kernels) picks its own vector width from
    the processor, whatever ATen was told: with the kernels pinned, it gets AVX2's too (256-bit
    vectors), so a compiled model computes like the eager one."""
    if tag() == "pinned-avx2":
        import torch._inductor.config as inductor
        inductor.cpp.simdlen = 256
