"""The :class:`Study` base class and the records its hooks exchange with the runner.

Lifecycle, driven by :func:`vampstudy.runner.run_study` (the only caller of hooks)::

    study = MyStudy(**params)           # stores params, nothing else
    study.validate(backend)             # once, before any run is created
    study.prepare(session)              # once, clips loaded and encoded
    study.iterate()                     # once: the conditions (pure)
    study.generate(trial, backend)      # once per clip × condition × seed
                                        #   (a MaskingStudy's: study.mask(trial, backend), then vamp)
    study.analyze(outcomes, session)    # once, over every finished outcome

Hooks compute and return data; the runner logs it to MLflow (params,
metrics, audio, arrays, figures, tables), handles failures, resume and
progress. A study never imports mlflow.

A study's parameters are its constructor's keyword arguments; ``__init__``
only stores them under the same names (as in scikit-learn), and
:meth:`Study.get_params` reads them back from the signature — so they are
declared once and become CLI options and MLflow params automatically.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from .backends.base import MASK_OPTIONS, Backend
from .fidelity import fidelity_metrics, visqol_moslqo
from .embeddings import array_name, get_embedding, resolve_embeddings
from .masks import check_mask
from .metrics import prompt_bitrate_bps, token_metrics

if TYPE_CHECKING:  # pragma: no cover
    from audiotools import AudioSignal

logger = logging.getLogger(__name__)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and tuples as lists: stable across runs, for keys and hashes."""
    def default(obj):
        if isinstance(obj, (np.integer, np.floating)):
            return obj.item()
        if isinstance(obj, (set, frozenset)):
            return sorted(obj)
        return str(obj)

    return json.dumps(value, sort_keys=True, default=default, separators=(",", ":"))


@dataclass(frozen=True)
class Condition:
    """One setting of the varied parameters, e.g. ``Condition({"interval": 7})``.

    ``params`` are logged on the condition's run and identify it (the stable
    :attr:`key`); ``label`` is a short display name. ``control`` is empty for a
    study's own conditions and names the kind of a control (:data:`CONTROLS`);
    ``base`` is the condition a ``noise`` control imitates.
    """

    params: dict
    label: str = ""
    control: str = ""
    base: "Condition | None" = field(default=None, compare=False)

    @property
    def key(self) -> str:
        return canonical_json(self.params)

    @property
    def name(self) -> str:
        return self.label or " ".join(f"{k}={v}" for k, v in self.params.items()) or "default"


#: Kinds of control runs: ``codec`` (encode → decode: the fidelity ceiling, one per clip)
#: and ``noise`` (a condition's generated positions filled with random tokens: its floor).
CONTROLS = ("codec", "noise")


def codec_control() -> Condition:
    """The ``codec`` control: the clip's own codes decoded, nothing generated."""
    return Condition({"control": "codec"}, label="codec", control="codec")


def noise_control(base: Condition) -> Condition:
    """The ``noise`` control of ``base``: its mask, random tokens where it generates."""
    return Condition({"control": "noise", **base.params}, label=f"noise {base.name}",
                     control="noise", base=base)


@dataclass
class PreparedClip:
    """A clip after the backend's preprocessing and encoding (computed once per study)."""

    name: str
    identity: dict          # name, path, sha256, duration_s, ... (see vampstudy.audio.Clip)
    signal: "AudioSignal"   # preprocessed by the backend
    codes: torch.Tensor     # (1, n_codebooks, n_steps)

    @property
    def n_steps(self) -> int:
        return int(self.codes.shape[-1])


@dataclass
class Session:
    """What the runner hands to ``prepare`` and ``analyze``."""

    backend: Backend
    clips: list[PreparedClip]
    seeds: list[int]


@dataclass(frozen=True)
class Trial:
    """One unit of work: a condition on one clip with one seed."""

    condition: Condition
    clip: PreparedClip
    seed: int

    @property
    def key(self) -> str:
        """Stable identity, used to resume and de-duplicate."""
        return canonical_json({"clip": self.clip.identity["sha256"],
                               "condition": self.condition.params, "seed": self.seed})


@dataclass
class Record:
    """Things to log on a run. Every field is optional.

    Attributes
    ----------
    params : dict
        Extra parameters (plain values).
    metrics : dict
        Scalar metrics.
    series : dict
        Metric series: name → list of values, logged with ``step`` = index.
    audio : dict
        name → AudioSignal, written as ``audio/<name>.wav``.
    arrays : dict
        name → numpy array, stored together in ``arrays.npz``.
    figures : dict
        name → matplotlib Figure, saved as ``figures/<name>.png`` (then closed).
    tables : dict
        name → list of row dicts, logged as an MLflow table and a CSV.
    texts : dict
        artifact path → text (e.g. ``observations.txt``).
    files : dict
        artifact path → bytes (e.g. ``embeddings/mel.npz``) or a
        :class:`vampstudy.spool.SpooledFile` (a large page written to disk piece by
        piece, e.g. ``report.html``).
    """

    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    series: dict = field(default_factory=dict)
    audio: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    texts: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)


@dataclass
class Outcome(Record):
    """What :meth:`Study.generate` returns for one trial.

    The runner fills :attr:`trial` and :attr:`run_id`. Outcomes of conditions
    finished in an earlier (resumed) invocation are reloaded from MLflow with
    their params, metrics, arrays and audio (figures are not reloaded).
    """

    trial: Trial | None = None
    run_id: str | None = None


@dataclass
class Summary(Record):
    """What :meth:`Study.prepare` and :meth:`Study.analyze` return for the parent run."""


class Study:
    """Base class of every study. Subclass it and implement :meth:`generate`.

    Class attributes
    ----------------
    name : str
        Registry name (``vampstudy run <name>``). Defaults to the class name.
    description : str
        One line for ``vampstudy list``; defaults to the docstring's first line.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = cls.__name__
        if not cls.__dict__.get("description"):
            doc = inspect.getdoc(cls) or ""
            cls.description = doc.strip().splitlines()[0] if doc.strip() else ""

    # ---------------------------------------------------------- params
    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self) -> dict:
        """The constructor's parameters as stored on the instance (read off the signature)."""
        missing = [n for n in self.param_names() if not hasattr(self, n)]
        if missing:
            raise TypeError(f"{type(self).__name__}.__init__ must store its parameters as "
                            f"attributes of the same name; missing: {missing}")
        return {n: getattr(self, n) for n in self.param_names()}

    def run_options(self) -> dict:
        """Settings that are not constructor parameters but change what a run records
        (e.g. an optional metric). Logged on the parent and part of the configuration hash."""
        return {}

    def config_hash(self, **extra) -> str:
        """Hash of the study's identity and parameters plus ``extra`` (backend, clips, seeds)."""
        blob = canonical_json({"study": self.name, "params": self.get_params(),
                               "run_options": self.run_options(), **extra})
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # ----------------------------------------------------------- hooks
    def validate(self, backend: Backend) -> None:
        """Check the parameters against the backend; raise ``ConfigError`` if invalid.

        When: once, before any MLflow run is created, so that bad input leaves
        nothing behind. May not change anything. Default: accept.
        """

    def prepare(self, session: Session) -> Summary | None:
        """Compute study-wide state once, after the clips are loaded and encoded.

        When: once per invocation (also on resume), before :meth:`iterate`.
        Receives the :class:`Session` (backend, prepared clips, seeds). May set
        attributes ending in ``_``; may return a :class:`Summary` whose content
        is logged on the parent run (e.g. codec timing). Default: nothing.
        """
        return None

    def iterate(self) -> list[Condition]:
        """Return the conditions to run, in order. Must be pure (config → list).

        Default: one condition with no varying parameter.
        """
        return [Condition({})]

    def control_conditions(self, conditions: list[Condition]) -> list[Condition]:
        """The control runs to add to ``conditions`` (pure). Default: none.

        :class:`MaskingStudy` returns a ``codec`` control and one ``noise`` control per
        condition when its ``controls`` switch is on (``--controls``, the default).
        """
        return []

    def generate(self, trial: Trial, backend: Backend) -> Outcome:
        """Run one trial and return its :class:`Outcome`. **Required.**

        When: once per clip × condition × seed, after the runner seeded
        torch, numpy and random with ``trial.seed``. Must not log or write
        files. An exception marks this trial's run FAILED; the others go on.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement the generate() hook")

    def model_stage(self, trial: Trial, backend: Backend):
        """The part of a trial that needs the model; an executor runs it on the backend's device.

        Returns whatever :meth:`measure_stage` takes. Default: the whole :meth:`generate`.
        Executors call ``measure_stage(trial, model_stage(trial, backend), backend)``, so
        they may overlap one trial's measurement with the next trial's model call.
        """
        return self.generate(trial, backend)

    def measure_stage(self, trial: Trial, staged, backend: Backend) -> Outcome:
        """The part of a trial that needs no model call (metrics, figures). Default: ``staged``."""
        return staged

    def analyze(self, outcomes: list[Outcome], session: Session) -> Summary | None:
        """Summarise every finished outcome for the parent run.

        When: once, after all trials (including ones finished before a
        resume; their figures are not reloaded). Default: the standard tables
        (:func:`vampstudy.summary.standard_tables`): per condition the mean,
        std, n and 95 % CI of every metric, per clip when there are several,
        and paired comparisons of neighbouring conditions when there are repeats;
        and the listening report ``report.html`` (in :attr:`Record.files`, written to disk
        card by card) when outcomes carry audio.
        """
        from .listening import listening_report_file
        from .summary import standard_tables

        metrics = list(dict.fromkeys(m for o in outcomes for m in o.metrics if "_cb" not in m))
        files = {}
        if any("output" in o.audio for o in outcomes):
            files["report.html"] = listening_report_file(outcomes, session,
                                                         f"{self.name}: listening report")
        return Summary(tables=standard_tables(outcomes, metrics), files=files)


class MaskingStudy(Study):
    """A study whose conditions are masks (and sampling options) for VampNet.

    :meth:`generate` takes the trial's mask from :meth:`mask` (by default
    ``backend.build_mask`` with the condition's :meth:`mask_options`), checks
    it, vamps with ``backend.vamp``, decodes and computes the standard token
    metrics (:func:`vampstudy.metrics.token_metrics`). Subclasses say which
    options a condition sets (:meth:`mask_options`, :meth:`sampling_options`)
    or build any mask themselves (:meth:`mask`, with :mod:`vampstudy.masks`),
    and may add measurements in :meth:`measure`. Keeping the model call apart
    from the measurement lets a runner hand several trials to the model in one
    call. Audio fidelity metrics (mel distance, chroma similarity, onset
    correlation, tempo difference to the original; :mod:`vampstudy.fidelity`)
    are added unless the class sets ``fidelity = False``.
    """

    #: The codebooks ``mask_density`` averages over (``0 .. upper_codebook_mask - 1``) when
    #: the condition's mask options do not set ``upper_codebook_mask`` — also for a mask
    #: of your own from :meth:`mask`, whose density is measured over these codebooks.
    upper_codebook_mask: int = 3
    #: Compute the audio fidelity metrics (:mod:`vampstudy.fidelity`) of every output.
    fidelity: bool = True
    #: Also compute ViSQOL's MOS-LQO (slow; optional package). Set by ``--visqol``.
    visqol: bool = False
    #: Add the ``codec`` and ``noise`` control runs (:data:`CONTROLS`). ``--controls/--no-controls``.
    controls: bool = True
    #: Frame embeddings computed per output for FAD/KAD (:mod:`vampstudy.embeddings`). ``--embedding``.
    embeddings: tuple = ("mel",)

    def run_options(self) -> dict:
        options = {"visqol": True} if self.visqol else {}
        if self.controls and not self._generate_overridden():
            options["controls"] = True
        if tuple(self.embeddings) != ("mel",):
            options["embeddings"] = list(self.embeddings)
        return options

    def control_conditions(self, conditions: list[Condition]) -> list[Condition]:
        """A ``codec`` control and a ``noise`` control per condition, when ``controls`` is on.

        None for a subclass that overrides :meth:`generate` (its mask is not known).
        """
        if not self.controls or self._generate_overridden():
            return []
        return [codec_control()] + [noise_control(c) for c in conditions if not c.control]

    def resolve(self, trial: Trial) -> Condition:
        """The condition with clip-dependent values made concrete (e.g. ``beat`` → 29 tokens).

        Called by the default :meth:`mask` before :meth:`mask_options`, and by
        :meth:`generate` before :meth:`sampling_options`. Default: the condition unchanged.
        """
        return trial.condition

    def mask_options(self, condition: Condition) -> dict:
        """``build_mask`` keywords for this condition. Default: condition params that are mask options."""
        return {k: v for k, v in condition.params.items() if k in MASK_OPTIONS}

    def mask(self, trial: Trial, backend: Backend) -> torch.Tensor:
        """The mask of one trial: 1 = generate, 0 = keep, shaped like ``trial.clip.codes``.

        When: in the model stage of every trial, after the runner seeded torch,
        numpy and random with ``trial.seed`` and before ``backend.vamp``; on
        whichever executor runs the trial (a subclass that overrides
        :meth:`generate` calls it itself, if at all). Other code may call it too (a
        control that needs the positions a condition generates), so it must
        only compute: no files, no logging, no state beyond the RNG it draws from.

        Parameters
        ----------
        trial : Trial
            The condition (``trial.condition``; call :meth:`resolve` for its
            clip-dependent values), the prepared clip (``trial.clip.codes``,
            ``trial.clip.signal``) and the seed.
        backend : Backend
            The loaded backend (timing: ``s2t``, ``n_codebooks``, ``device``).

        Returns
        -------
        torch.LongTensor
            Of ``trial.clip.codes``' shape, dtype (``torch.long``) and device,
            holding only 0 and 1. Anything else fails the trial with a
            :class:`~vampstudy.errors.MaskError` before the model is called.
            ``mask_density`` is measured over the first
            :attr:`upper_codebook_mask` codebooks.

        Default: ``backend.build_mask(codes, signal, **self.mask_options(condition))``
        on the resolved condition.

        Examples
        --------
        Keep codebook 0 everywhere and every P-th step of codebooks 1–2 (the
        functions of :mod:`vampstudy.masks` each return such a tensor)::

            def mask(self, trial, backend):
                codes, period = trial.clip.codes, trial.condition.params["period"]
                steps = keep_both(keep_periodic(codes, period), keep_codebooks(codes, 1, 3))
                return keep_either(keep_codebooks(codes, 0, 1), steps)
        """
        condition = self.resolve(trial)
        return backend.build_mask(trial.clip.codes, trial.clip.signal,
                                  **self.mask_options(condition))

    def sampling_options(self, condition: Condition) -> dict:
        """``vamp`` keywords for this condition (``seed`` is added by :meth:`generate`)."""
        return {}

    def _upper(self, trial: Trial) -> int:
        options = self.mask_options(self.resolve(trial))
        return int(options.get("upper_codebook_mask", self.upper_codebook_mask))

    def measure(self, trial: Trial, outcome: Outcome, backend: Backend) -> Outcome:
        """Add study-specific params, metrics or figures to a trial's outcome.

        ``outcome.arrays`` holds ``codes_in``, ``codes_out`` and ``mask``;
        ``outcome.audio["output"]`` the decoded signal. Default: unchanged.
        """
        return outcome

    # ---------------------------------------------------- the two stages
    def _generate_overridden(self) -> bool:
        return type(self).generate is not MaskingStudy.generate

    def model_stage(self, trial: Trial, backend: Backend):
        """Mask, vamp and decode (the only part that needs the model); see :class:`ModelOutput`.

        A subclass that overrides :meth:`generate` keeps its own generate, run whole here.
        """
        if trial.condition.control:
            return self._control_stage(trial, backend)
        if self._generate_overridden():
            return self.generate(trial, backend)
        return self._mask_vamp_decode(trial, backend)

    def _mask_vamp_decode(self, trial: Trial, backend: Backend) -> "ModelOutput":
        codes = trial.clip.codes
        mask = check_mask(self.mask(trial, backend), codes,
                          f"{type(self).__name__}.mask() of study {self.name!r} for trial "
                          f"{trial.condition.name!r} (clip {trial.clip.name!r}, seed {trial.seed})")
        condition = self.resolve(trial)
        upper = self._upper(trial)
        codes_out = backend.vamp(codes, mask, seed=trial.seed,
                                 **self.sampling_options(condition))
        signal = backend.decode(codes_out)
        return ModelOutput(mask=mask, codes_out=codes_out, signal=signal, upper=upper)

    def _control_stage(self, trial: Trial, backend: Backend) -> "ModelOutput":
        """A control's codes, decoded; no model call (see :func:`codec_control`, :func:`noise_control`).

        ``noise``: the base condition's mask (built first, right after the runner seeded
        every RNG with the trial's seed, exactly as the condition's own trial builds it),
        its generated positions filled with tokens drawn uniformly from the codebook by a
        generator seeded with the trial's seed.
        """
        codes = trial.clip.codes
        if trial.condition.control == "codec":
            mask = torch.zeros_like(codes)
            return ModelOutput(mask, codes, backend.decode(codes), self.upper_codebook_mask)
        base = Trial(trial.condition.base, trial.clip, trial.seed)
        mask = check_mask(self.mask(base, backend), codes,
                          f"{type(self).__name__}.mask() of study {self.name!r} for the noise "
                          f"control of {base.condition.name!r} (clip {trial.clip.name!r}, "
                          f"seed {trial.seed})")
        gen = torch.Generator().manual_seed(int(trial.seed))
        noise = torch.randint(0, int(backend.codebook_size), tuple(codes.shape), generator=gen)
        codes_out = torch.where(mask.cpu().bool(), noise, codes.cpu()).to(codes.device)
        return ModelOutput(mask, codes_out, backend.decode(codes_out), self._upper(base))

    def measure_stage(self, trial: Trial, staged, backend: Backend) -> Outcome:
        """Token and fidelity metrics, figures and :meth:`measure` (needs no model call)."""
        if not isinstance(staged, ModelOutput):
            return staged
        from . import plots, trialfigures

        codes, mask, codes_out, signal = trial.clip.codes, staged.mask, staged.codes_out, staged.signal
        metrics, series = token_metrics(codes, codes_out, mask, staged.upper)
        metrics["prompt_bitrate_bps"] = prompt_bitrate_bps(mask, backend.sample_rate,
                                                           backend.hop_length, backend.codebook_size)
        if self.fidelity:
            metrics.update(fidelity_metrics(trial.clip.signal, signal))
        if self.visqol:
            metrics["visqol_moslqo"] = visqol_moslqo(trial.clip.signal, signal)
        label = plots.backend_label(backend)
        title = f"{trial.condition.name} — density {metrics['mask_density']:.3f}"
        outcome = Outcome(
            metrics=metrics, series=series,
            audio={"output": signal},
            arrays={"codes_in": codes.cpu().numpy(), "codes_out": codes_out.cpu().numpy(),
                    "mask": mask.cpu().numpy()},
            # drawn on reused figures and rendered now (vampstudy.trialfigures)
            figures={"mask": trialfigures.mask_png(mask, title, label),
                     "spectrogram": trialfigures.spectrogram_png(signal, trial.condition.name, label)},
        )
        for name in self.usable_embeddings(backend):
            outcome.arrays[array_name(name)] = get_embedding(name).frames(signal, backend)
        control = trial.condition.control
        if control:
            outcome.params["control"] = control
        if control == "noise":
            outcome.params["noise_ratio"] = round(metrics["mask_density"], 6)
            return self.measure(Trial(trial.condition.base, trial.clip, trial.seed), outcome, backend)
        if control == "codec":
            return outcome
        return self.measure(trial, outcome, backend)

    def analyze(self, outcomes: list[Outcome], session: Session) -> Summary | None:
        """The base class's tables and report, plus the evidence (:meth:`add_evidence`)."""
        return self.add_evidence(super().analyze(outcomes, session), outcomes, session)

    def add_evidence(self, summary: Summary, outcomes: list[Outcome], session: Session) -> Summary:
        """Add FAD and KAD per row (condition or control) to ``summary``.

        For each usable embedding: columns ``fad_<emb>``, ``kad_<emb>`` (+ ``_ci95``) in
        the ``summary`` table (rows matched by their ``condition`` label), the
        ``distribution`` table (values, intervals, n, warnings), ``embeddings/<emb>.npz``
        (the originals' frames under ``reference``, each row's under its label, and
        ``<label>:clip`` the clip index of every frame), the kernel bandwidths as params,
        and the figure ``bitrate_vs_quality`` (first embedding).
        """
        from . import plots
        from .evidence import distribution_evidence, merge_columns

        names = self.usable_embeddings(session.backend)
        if not names or not outcomes:
            return summary
        ev = distribution_evidence(outcomes, session.clips, session.backend, names)
        rows = summary.tables.get("summary")
        if rows:
            summary.tables["summary"] = rows = merge_columns(rows, outcomes, ev.columns)
        if ev.rows:
            summary.tables["distribution"] = ev.rows
        summary.files.update(ev.files)
        summary.params.update(ev.params)
        if rows and any(r.get("prompt_bitrate_bps_mean") for r in rows):
            intervals: dict = {}
            for d in ev.rows:
                if d["embedding"] == names[0]:
                    intervals.setdefault(d["metric"], {})[d["condition"]] = (d["ci_low"], d["ci_high"])
            summary.figures["bitrate_vs_quality"] = plots.bitrate_quality_figure(
                rows, names[0], label=plots.backend_label(session.backend), intervals=intervals)
        return summary

    def usable_embeddings(self, backend: Backend) -> list[str]:
        """The names in :attr:`embeddings` usable here (once per process; the others are
        reported once, in one line each, by :func:`vampstudy.embeddings.resolve_embeddings`)."""
        cached = self.__dict__.get("_usable_embeddings")
        if cached is None:
            cached, notes = resolve_embeddings(self.embeddings, backend)
            for note in notes:
                logger.warning(note)
            self.__dict__["_usable_embeddings"] = cached
        return cached

    def generate(self, trial: Trial, backend: Backend) -> Outcome:
        """Both stages in one call: :meth:`model_stage` then :meth:`measure_stage`."""
        return self.measure_stage(trial, self._mask_vamp_decode(trial, backend), backend)


@dataclass
class ModelOutput:
    """What :meth:`MaskingStudy.model_stage` hands to its measurement stage."""

    mask: torch.Tensor
    codes_out: torch.Tensor
    signal: "AudioSignal"
    upper: int
