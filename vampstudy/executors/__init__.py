"""The executors by name: :func:`make_executor` builds the one a study runs with.

Built in (:mod:`vampstudy.execute`): ``pipelined`` and ``sequential``; and here,
needing no extra:

* :mod:`vampstudy.executors.process` — ``--executor process`` (the default): the model in
  the caller's process; measurement, recording and the analysis in one measuring process
  (helpers in :mod:`vampstudy.executors.measuring`, :mod:`vampstudy.executors.hosting`
  and :mod:`vampstudy.executors.shm`).

Optional extras:

* :mod:`vampstudy.executors.ray` — ``--executor ray``: a pool of Ray actors
  (``pip install 'vampstudy[ray]'``).

The registry lives here, beside the executors, so that the base module
(:mod:`vampstudy.execute`) never imports an executor built on it.
"""

from __future__ import annotations

from typing import Callable

from ..errors import ConfigError
from ..execute import Executor, PipelinedExecutor, SequentialExecutor


def _process_executor(**options) -> Executor:
    """``--executor process`` (:mod:`vampstudy.executors.process`), imported when chosen."""
    from .process import ProcessExecutor

    return ProcessExecutor(**options)


#: The executors that need no optional extra.
LOCAL_EXECUTORS: dict[str, Callable[..., Executor]] = {"pipelined": PipelinedExecutor,
                                                       "sequential": SequentialExecutor,
                                                       "process": _process_executor}


def available_executors() -> dict[str, Callable[..., Executor]]:
    """Executor factories by name (``ray`` when its optional extra is importable)."""
    found = dict(LOCAL_EXECUTORS)
    try:
        from .ray import RayExecutor  # optional extra
    except ImportError:
        pass
    else:
        found["ray"] = RayExecutor
    return found


EXECUTOR_NAMES = ("pipelined", "sequential", "process", "ray")


def make_executor(name: str = "process", **options) -> Executor:
    """The executor called ``name`` built with ``options``.

    Raises
    ------
    ConfigError
        Unknown name, or ``ray`` without its extra installed.
    """
    if name in LOCAL_EXECUTORS:  # without importing the optional extra (Ray's import is slow)
        return LOCAL_EXECUTORS[name](**options)
    factories = available_executors()
    if name not in factories:
        if name == "ray":
            raise ConfigError("--executor ray needs Ray: pip install 'vampstudy[ray]' "
                              "(or pip install ray)")
        raise ConfigError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTOR_NAMES)}")
    return factories[name](**options)
