"""vampstudy: tracked, repeatable masking studies for masked acoustic token models.

The pieces a study author needs are importable from here::

    from vampstudy import Study, MaskingStudy, SweepStudy, Condition, Outcome, Summary, plots

They are loaded on first use (PEP 562), so ``import vampstudy`` — and the
command line's start-up — does not pay for torch, matplotlib or mlflow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import VampstudyError

#: Public name → the submodule that defines it (``None``: the name is the submodule).
_LAZY = {
    "Condition": "study", "MaskingStudy": "study", "Outcome": "study", "Session": "study",
    "Study": "study", "Summary": "study", "Trial": "study",
    "SweepStudy": "sweep",
    "load_backend": "backends",
    "plots": None,
}

__all__ = ["Condition", "MaskingStudy", "Outcome", "Session", "Study", "Summary", "SweepStudy",
           "Trial", "VampstudyError", "load_backend", "plots", "__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from . import plots
    from .backends import load_backend
    from .study import Condition, MaskingStudy, Outcome, Session, Study, Summary, Trial
    from .sweep import SweepStudy


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("vampstudy")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            value = "0+unknown"
    elif name in _LAZY:
        module = _LAZY[name]
        if module is None:
            value = importlib.import_module(f"{__name__}.{name}")
        else:
            value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
