"""What crosses from the model process to the measuring process and back
(``--executor process``): the backend's facts instead of the backend, the study files a
study's class comes from, a study invocation's payload, and errors.

Used by both sides (:mod:`vampstudy.executors.process`, :mod:`.measuring`,
:mod:`.hosting`); the large arrays travel in shared memory (:mod:`.shm`).
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
import sys
from dataclasses import dataclass

from .shm import dumps, loads

logger = logging.getLogger(__name__)


@dataclass
class BackendView:
    """The measuring process' stand-in for the backend: its facts, no model.

    Attributes any measurement reads (name, timing, codebook size) are copied from the
    model process' backend; anything else (a model method, a backend's own attribute)
    loads the real backend here, once, from ``spec`` (logged: it costs a model's memory).
    """

    name: str
    description: str
    is_vampnet: bool
    sample_rate: int
    hop_length: int
    n_codebooks: int
    codebook_size: int
    device: str
    codec_latents_available: bool
    facts: dict
    opts: dict
    spec: tuple

    @classmethod
    def of(cls, backend, spec: tuple) -> "BackendView":
        return cls(backend.name, backend.description, bool(getattr(backend, "is_vampnet", False)),
                   int(backend.sample_rate), int(backend.hop_length), int(backend.n_codebooks),
                   int(backend.codebook_size), str(backend.device),
                   bool(backend.has_codec_latents()), dict(backend.info()),
                   dict(backend.options()), tuple(spec))

    # the Backend base class' timing helpers, on the copied facts
    tokens_per_second = property(lambda self: self.sample_rate / self.hop_length)
    ms_per_token = property(lambda self: 1000.0 * self.hop_length / self.sample_rate)

    def s2t(self, seconds: float) -> int:
        from ..backends.base import Backend

        return Backend.s2t(self, seconds)

    def t2s(self, tokens: int) -> float:
        return tokens * self.hop_length / self.sample_rate

    def info(self) -> dict:
        return dict(self.facts)

    def options(self) -> dict:
        return dict(self.opts)

    def has_codec_latents(self) -> bool:
        return self.codec_latents_available

    def __getattr__(self, attr):
        if attr.startswith("__") or attr in ("spec", "_real"):
            raise AttributeError(attr)
        real = self.__dict__.get("_real")
        if real is None:
            from ..backends import load_backend

            logger.warning("the measuring process loads backend %s itself: a measurement "
                           "uses backend.%s", self.spec[0], attr)
            real = self.__dict__["_real"] = load_backend(self.spec[0], **dict(self.spec[1]))
        return getattr(real, attr)


def user_modules() -> dict:
    """Study files loaded by path (``vampstudy run path/to/file.py:Class``): module name →
    file, for the measuring process to load them before unpickling their studies."""
    return {name: m.__file__ for name, m in list(sys.modules.items())
            if name.startswith("vampstudy_user_") and getattr(m, "__file__", None)}


def job_payload(job, trials: list, patience: float) -> bytes:
    """What the measuring process needs to serve one ``execute`` (GPU tensors → CPU)."""
    from ..execute import Job

    view = BackendView.of(job.backend, job.backend_spec)
    shipped = Job(study=job.study, backend=view, backend_spec=job.backend_spec, remote=job.remote)
    body = dumps({"job": shipped, "trials": trials, "patience": patience})
    return pickle.dumps({"user_modules": user_modules(), "body": body})


def load_payload(payload: bytes) -> dict:
    outer = pickle.loads(payload)
    for name, path in outer["user_modules"].items():   # study files loaded by path
        if name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
    return loads(outer["body"])


def error_payload(exc: BaseException) -> bytes:
    """The exception pickled for the parent, or a plain description when it does not pickle."""
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
        return data
    except Exception:
        return pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
