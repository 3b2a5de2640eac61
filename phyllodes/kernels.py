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

def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "x64")


def _native() -> bool:
    return not is_x86() or os.environ.get(SWITCH, "").strip().lower() == "native"


def pin() -> None:
    """Set :data:`PINNED` in the environment unless the user chose otherwise; called when the
    package is imported. Pinning after torch has loaded has no effect: then nothing is set, the
    tag says so (``late``) and a warning names the fix."""
    if _native():
        return
    if "torch" in sys.modules and not all(k in os.environ for k in PINNED):
        warnings.warn(
            "phyllodes: torch was imported before phyllodes, so the CPU kernels could not be "
            "pinned (runs get a 'late' kernel tag and ids of their own). Import phyllodes "
            "first, or export " + " ".join(f"{k}={v}" for k, v in PINNED.items())
            + " before starting Python.", stacklevel=3)
        return
    for key, value in PINNED.items():
        os.environ.setdefault(key, value)


def tag() -> str:
    """What the CPU kernels are, read from the environment (no state is kept): ``pinned-avx2``
    (the study's), ``native`` (the switch), ``native-<machine>`` off x86, ``custom:...`` (a
    user's values), or ``late``: the pinning is missing (torch was loaded first) or torch does
    not report the pinned AVX2 dispatch (the variable was set after torch read it)."""
    if not is_x86():
        return f"native-{platform.machine().lower() or 'unknown'}"
    if _native():
        return "native"
    values = {k: os.environ.get(k) for k in PINNED}
    if any(v is None for v in values.values()):
        return "late"
    if values != PINNED:
        return "custom:" + ",".join(f"{k}={v}" for k, v in values.items())
    if "torch" in sys.modules:
        import torch
        if torch.backends.cpu.get_cpu_capability().upper() != "AVX2":
            return "late"
    return "pinned-avx2"


def pin_compiler() -> None:
    """``torch.compile``'s CPU code (Inductor's C++ kernels) picks its own vector width from
    the processor, whatever ATen was told: with the kernels pinned, it gets AVX2's too (256-bit
    vectors), so a compiled model computes like the eager one."""
    if tag() == "pinned-avx2":
        import torch._inductor.config as inductor
        inductor.cpp.simdlen = 256


def machine() -> dict:
    """The processor the kernels run on: ``vendor`` (``AuthenticAMD``, ``GenuineIntel``, or
    the platform's name off x86 Linux), ``model`` (its name), ``family`` / ``model_number``
    (x86 Linux), and ``isa``, the vector extensions that decide what the native kernels would
    use. Recorded beside the committed tables (``tables/<cohort>/machine.json``) so that
    ``./run_all.sh --check`` knows what it compares against."""
    info = {"vendor": platform.machine() or "unknown", "model": platform.processor() or "",
            "family": None, "model_number": None, "isa": []}
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return info
    first = text.split("\n\n", 1)[0]
    fields = {}
    for line in first.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    info.update(vendor=fields.get("vendor_id", info["vendor"]),
                model=fields.get("model name", info["model"]),
                family=int(fields["cpu family"]) if fields.get("cpu family", "").isdigit()
                else None,
                model_number=int(fields["model"]) if fields.get("model", "").isdigit()
                else None,
                isa=sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_tile"}))
    return info


def record() -> dict:
    """What computed a result, as far as the CPU kernels go: :func:`machine`, :func:`tag` and
    the torch version (read from the installed package, torch is not imported here)."""
    from importlib import metadata
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {"machine": machine(), "kernels": tag(), "torch": torch_version}

