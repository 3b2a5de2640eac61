"""Helpers for the phyllodes multimodal (ultrasound + clinical) study repository.

Notebooks in ``notebooks/`` orchestrate; the logic lives here, one module per step of
the flow in ``../shared/DESIGN.md``: cohort -> splits -> clinical/images -> models ->
training -> metrics/stats -> explain.
"""

__version__ = "0.1.0"

# before anything imports torch: the same CPU kernels on every x86 machine (phyllodes.kernels)
from phyllodes.kernels import pin as _pin_kernels  # noqa: E402

_pin_kernels()
