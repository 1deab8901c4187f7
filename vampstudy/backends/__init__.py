"""Backends: the model seam (see :mod:`vampstudy.backends.base`).

Backends are chosen by name:

* ``reference`` — built in, offline (:class:`~.reference.ReferenceBackend`);
* ``vampnet`` — the real model (:class:`~.vampnet.VampNetBackend`);
* ``auto`` — ``vampnet`` when it can be imported, else ``reference`` with a notice;
* any name registered by another package under the ``vampstudy.backends``
  entry-point group (the value is a class or factory taking keyword options);
* ``package.module:Factory`` — a class or factory imported from an importable module
  (e.g. the test backend ``vampstudy.testing:SleepyBackend``), without registering it.

Examples
--------
>>> from vampstudy.backends import load_backend
>>> backend = load_backend("reference", device="cpu")
>>> backend.name, backend.hop_length
('reference', 768)
"""

from __future__ import annotations

import inspect
import logging
from importlib.metadata import entry_points
from typing import Callable

from ..errors import ConfigError
from .base import MASK_OPTIONS, SAMPLING_OPTIONS, Backend, resolve_device
from .trace import SamplingTrace, SamplingTraceUnavailable, TraceSegment, TracedCall

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "vampstudy.backends"

__all__ = ["Backend", "MASK_OPTIONS", "SAMPLING_OPTIONS", "SamplingTrace",
           "SamplingTraceUnavailable", "TraceSegment", "TracedCall", "available_backends",
           "load_backend", "resolve_device", "resolve_backend_name"]


def _builtin() -> dict[str, Callable[..., Backend]]:
    from .reference import ReferenceBackend
    from .vampnet import VampNetBackend

    return {"reference": ReferenceBackend, "vampnet": VampNetBackend}


def available_backends() -> dict[str, Callable[..., Backend]]:
    """Backend factories by name: the built-in ones plus entry points."""
    found = dict(_builtin())
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            continue  # our own entry points, or a third party shadowing a built-in
        try:
            found[ep.name] = ep.load()
        except Exception as exc:  # a broken plugin must not break vampstudy
            logger.warning("backend entry point %r could not be loaded: %s", ep.name, exc)
    return found


def resolve_backend_name(name: str) -> str:
    """``auto`` → ``vampnet`` if importable, else ``reference`` (logged as a notice)."""
    if name != "auto":
        return name
    from .vampnet import vampnet_available

    if vampnet_available():
        return "vampnet"
    logger.warning("vampnet is not installed: using the built-in reference backend "
                   "(an offline stand-in, not VampNet)")
    return "reference"


def _import_factory(spec: str) -> Callable[..., Backend]:
    """The factory named by ``package.module:Name`` (import errors become one clear line)."""
    import importlib

    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"backend {spec!r}: cannot import module {module_name!r} ({exc}); "
                          "give an importable package.module:Class") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"backend {spec!r}: module {module_name!r} has no class or "
                          f"factory {attr!r}")
    return factory


def load_backend(name: str = "auto", **options) -> Backend:
    """Construct a backend by name with keyword options.

    Options that the backend does not take are refused with the list of
    those it does take, so a typo cannot be silently ignored.
    """
    name = resolve_backend_name(name)
    if ":" in name:
        factory = _import_factory(name)
    else:
        factories = available_backends()
        if name not in factories:
            raise ConfigError(f"unknown backend {name!r}; choose one of: auto, "
                              f"{', '.join(sorted(factories))}, or package.module:Class")
        factory = factories[name]
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            raise ConfigError(f"backend {name!r} does not take option(s) {unknown}; "
                              f"it takes: {', '.join(p for p in params if p != 'self')}")
    return factory(**options)
