"""vampstudy: tracked, repeatable masking studies for masked acoustic token models.

The pieces a study author needs are importable from here::

    from vampstudy import Study, MaskingStudy, SweepStudy, Condition, Outcome, Summary, plots
"""

from importlib.metadata import PackageNotFoundError, version

from . import plots
from .backends import load_backend
from .errors import VampstudyError
from .study import Condition, MaskingStudy, Outcome, Session, Study, Summary, Trial
from .sweep import SweepStudy

try:
    __version__ = version("vampstudy")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = ["Condition", "MaskingStudy", "Outcome", "Session", "Study", "Summary", "SweepStudy",
           "Trial", "VampstudyError", "load_backend", "plots", "__version__"]
