"""Periodic prompt interval: keep every P-th token, regenerate the rest.

The notebook this replaces ("Study 03") asked how the periodic prompt
interval P trades fidelity for variation. Per condition (one interval) it
builds the mask ``build_mask(periodic_prompt=P, upper_codebook_mask=3,
_dropout=0)``, vamps (``temperature=1.0, typical_filtering=True``), decodes,
and measures mask density and % tokens changed. The parent run gets the
notebook's summary: codec timing, the mask grid, interval-vs-change and
density-vs-change plots, the spectrogram grid and the summary table.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from vampstudy import plots
from vampstudy.errors import ConfigError
from vampstudy.fidelity import tempo_bpm
from vampstudy.listening import listening_report_file
from vampstudy.intervals import (IntervalList, interval_tokens, interval_warnings, is_beat,
                                 parse_interval)
from vampstudy.metrics import interval_ms
from vampstudy.study import Condition, MaskingStudy, Outcome, Session, Summary, Trial
from vampstudy.summary import STANDARD_METRICS, observations, spearman, standard_tables

logger = logging.getLogger(__name__)

NOTEBOOK_INTERVALS = (2, 3, 5, 7, 10, 13, 20, 30, 50, 70, 100)


class PeriodicIntervalStudy(MaskingStudy):
    """Periodic prompt interval: keep every P-th token, regenerate the rest.

    Parameters
    ----------
    intervals : tuple of int or str
        Prompt intervals P to sweep: token steps between kept tokens, or musical
        time (beat, beat/2, 2beat, bar) converted with the clip's tempo; mixable.
    upper_codebook_mask : int
        Codebooks at or above this index are fully regenerated.
    dropout : float
        VampNet's ``_dropout``: fraction of time steps forced to be generated.
    temperature : float
        Sampling temperature.
    typical_filtering : bool
        Typical sampling on or off.
    sampling_steps : int
        Unmasking steps of the coarse model (VampNet's ``_sampling_steps``).
    spectrogram_intervals : tuple of int
        Intervals shown beside the original in the spectrogram grid.
    tempo : float, optional
        Tempo in BPM for beat intervals; estimated from each clip when not given.
    """

    name = "periodic"
    cli_types = {"intervals": IntervalList()}

    def __init__(self, intervals: tuple[int | str, ...] = NOTEBOOK_INTERVALS,
                 upper_codebook_mask: int = 3, dropout: float = 0.0, temperature: float = 1.0,
                 typical_filtering: bool = True, sampling_steps: int = 12,
                 spectrogram_intervals: tuple[int, ...] = (3, 7, 13, 30, 70),
                 tempo: float | None = None):
        self.intervals = intervals
        self.upper_codebook_mask = upper_codebook_mask
        self.dropout = dropout
        self.temperature = temperature
        self.typical_filtering = typical_filtering
        self.sampling_steps = sampling_steps
        self.spectrogram_intervals = spectrogram_intervals
        self.tempo = tempo

    # ------------------------------------------------------------ hooks
    def validate(self, backend) -> None:
        bad = []
        for p in self.intervals:
            try:
                spec = parse_interval(p)
            except ValueError:
                bad.append(p)
                continue
            if not is_beat(spec) and spec <= 0:
                bad.append(p)
        if not self.intervals or bad:
            raise ConfigError(f"--intervals must be positive integers or beat, beat/2, 2beat, bar; "
                              f"got {list(self.intervals)}{f' (bad: {bad})' if bad else ''}; "
                              "e.g. --intervals 2,3,5,7", option="--intervals")
        if len(set(self.intervals)) != len(self.intervals):
            raise ConfigError(f"--intervals has duplicates: {list(self.intervals)}",
                              option="--intervals")
        if not 1 <= self.upper_codebook_mask <= backend.n_codebooks:
            raise ConfigError(f"--upper-codebook-mask must be in 1..{backend.n_codebooks} for the "
                              f"{backend.name} backend, got {self.upper_codebook_mask}",
                              option="--upper-codebook-mask")
        if not 0.0 <= self.dropout <= 1.0:  # (NaN fails every comparison, so it is refused too)
            raise ConfigError(f"--dropout must be in [0, 1], got {self.dropout}", option="--dropout")
        if not 0 <= self.temperature < float("inf"):
            raise ConfigError(f"--temperature must be >= 0, got {self.temperature}",
                              option="--temperature")
        if self.sampling_steps < 1:
            raise ConfigError(f"--sampling-steps must be >= 1, got {self.sampling_steps}",
                              option="--sampling-steps")
        if self.tempo is not None and not 0 < self.tempo < float("inf"):
            raise ConfigError(f"--tempo must be a positive BPM, got {self.tempo}", option="--tempo")

    def prepare(self, session: Session) -> Summary:
        backend = session.backend
        specs = [parse_interval(p) for p in self.intervals]
        self.tokens_per_second_ = backend.tokens_per_second
        self.tempo_ = {}
        if any(is_beat(p) for p in specs):
            for clip in session.clips:
                bpm = self.tempo or tempo_bpm(clip.signal)
                self.tempo_[clip.identity["sha256"]] = bpm
                logger.info("clip %s: tempo %.1f BPM%s", clip.name, bpm,
                            "" if self.tempo else " (estimated)")
        shortest = min(c.n_steps for c in session.clips)
        first = session.clips[0].identity["sha256"]
        resolved = [self._tokens(p, first) for p in specs]
        sparse = [p for p, n in zip(specs, resolved) if int(np.ceil(shortest / n)) <= 1]
        for warning in interval_warnings(specs, resolved, shortest, backend.t2s(shortest)):
            logger.warning(warning)
        clip = session.clips[0]
        params = {"tokens_per_second": round(backend.tokens_per_second, 4),
                  "ms_per_token": round(backend.ms_per_token, 4),
                  "intervals_ms": [round(interval_ms(n, backend.hop_length, backend.sample_rate), 1)
                                   for n in resolved]}
        if self.tempo_:
            params["tempo_bpm"] = round(self.tempo_[first], 2)
            params["tempo_source"] = "given" if self.tempo else "estimated (vampstudy.spectral.tempo)"
            params["intervals_tokens"] = [f"{p}={n}" for p, n in zip(specs, resolved)]
            if len(session.clips) > 1:
                params["tempo_bpm_by_clip"] = [f"{c.name}={self.tempo_[c.identity['sha256']]:.1f}"
                                               for c in session.clips]
        if sparse:
            params["intervals_single_prompt"] = sparse
        logger.info("codes %s: %.2f tokens/s, %.2f ms per token", tuple(clip.codes.shape),
                    backend.tokens_per_second, backend.ms_per_token)
        return Summary(params=params)

    def _tokens(self, spec, clip_sha: str) -> int:
        """Token steps of an interval spec on a clip (beat specs use that clip's tempo)."""
        return interval_tokens(spec, self.tempo_.get(clip_sha), self.tokens_per_second_)

    def iterate(self) -> list[Condition]:
        specs = [parse_interval(p) for p in self.intervals]
        return [Condition({"interval": p}, label=f"interval={p}") for p in specs]

    def resolve(self, trial: Trial) -> Condition:
        spec = trial.condition.params["interval"]
        if not is_beat(spec):
            return trial.condition
        tokens = self._tokens(spec, trial.clip.identity["sha256"])
        return Condition({"interval": tokens}, label=f"interval={spec} ({tokens})")

    def mask_options(self, condition: Condition) -> dict:
        return {"periodic_prompt": condition.params["interval"],
                "upper_codebook_mask": self.upper_codebook_mask, "_dropout": self.dropout}

    def sampling_options(self, condition: Condition) -> dict:
        return {"temperature": self.temperature, "typical_filtering": self.typical_filtering,
                "_sampling_steps": self.sampling_steps, "batch_size": 1}

    def measure(self, trial: Trial, outcome: Outcome, backend) -> Outcome:
        spec = trial.condition.params["interval"]
        p = self._tokens(spec, trial.clip.identity["sha256"])
        outcome.params["interval_tokens"] = p
        outcome.params["interval_ms"] = round(interval_ms(p, backend.hop_length,
                                                          backend.sample_rate), 3)
        if is_beat(spec):
            outcome.params["tempo_bpm"] = round(self.tempo_[trial.clip.identity["sha256"]], 2)
        outcome.metrics["expected_density"] = 1.0 - 1.0 / p
        return outcome

    def _tables(self, outcomes: list[Outcome], session: Session, tokens: dict, ms: dict) -> dict:
        """The standard tables with each row's interval in tokens and ms: conditions sorted
        by interval, then the control runs (the codec control has no interval)."""
        backend = session.backend
        tables = standard_tables(outcomes, STANDARD_METRICS)

        def interval_columns(r):
            if "interval" not in r:   # the codec control
                return dict(r)
            p = r["interval"]
            return {"condition": r["condition"], "control": r["control"], "interval": p,
                    "interval_tokens": tokens[p], "interval_ms": round(ms[p], 1),
                    "expected_density": round(1 - 1 / tokens[p], 4), **r}

        rows = [interval_columns(r) for r in tables["summary"] if not r["control"]]
        rows.sort(key=lambda r: r["interval_tokens"])
        tables["summary"] = rows + [interval_columns(r) for r in tables["summary"] if r["control"]]
        if "summary_by_clip" in tables:   # beat intervals: each clip's own tokens and ms
            sha = {c.name: c.identity["sha256"] for c in session.clips}
            by_clip = []
            for r in tables["summary_by_clip"]:
                if "interval" not in r:
                    by_clip.append(r)
                    continue
                n = self._tokens(r["interval"], sha[r["clip"]])
                by_clip.append({"clip": r["clip"], "interval": r["interval"], "interval_tokens": n,
                                "interval_ms": round(interval_ms(n, backend.hop_length,
                                                                 backend.sample_rate), 1),
                                **{k: v for k, v in r.items() if k not in ("clip", "interval")}})
            tables["summary_by_clip"] = by_clip
        return tables

    def _example_figures(self, outcomes: list[Outcome], session: Session, tokens: dict,
                         ms: dict, label: str) -> dict:
        """The mask grid and the spectrogram grid, from one example per interval (first
        clip, first seed)."""
        figures = {}
        first_outcome = {}
        for o in outcomes:
            first_outcome.setdefault(o.trial.condition.params["interval"], o)
        order = sorted(first_outcome, key=lambda p: tokens[p])
        masks = [(f"P={p} ({ms[p]:.0f} ms), density {first_outcome[p].metrics['mask_density']:.3f}",
                  torch.as_tensor(first_outcome[p].arrays["mask"])) for p in order
                 if "mask" in first_outcome[p].arrays]
        if masks:
            figures["mask_grid"] = plots.mask_grid_figure(masks, label)
        spec_items = [("original", session.clips[0].signal)]
        spec_items += [(f"P={p} ({ms[p]:.0f} ms)", first_outcome[p].audio["output"])
                       for p in self.spectrogram_intervals
                       if p in first_outcome and "output" in first_outcome[p].audio
                       and first_outcome[p].trial.clip is session.clips[0]]
        figures["spectrogram_grid"] = plots.spectrogram_grid_figure(spec_items, label)
        return figures

    def analyze(self, outcomes: list[Outcome], session: Session) -> Summary:
        backend = session.backend
        label = plots.backend_label(backend)
        first = session.clips[0].identity["sha256"]
        every = outcomes
        outcomes = [o for o in every if not o.trial.condition.control]   # controls: tables only
        tokens = {p: self._tokens(p, first) for p in
                  (o.trial.condition.params["interval"] for o in every
                   if "interval" in o.trial.condition.params)}
        ms = {p: interval_ms(n, backend.hop_length, backend.sample_rate) for p, n in tokens.items()}
        tables = self._tables(every, session, tokens, ms)
        rows = [r for r in tables["summary"] if not r["control"]]
        if not rows:   # every condition failed; only controls finished
            return self.add_evidence(Summary(tables=tables), every, session)
        x = [r["interval_tokens"] for r in rows]
        y = [r["tokens_changed_pct_mean"] for r in rows]
        err = [r["tokens_changed_pct_ci95"] or 0.0 for r in rows] if rows[0]["n"] > 1 else None
        names = [f"{r['interval']}" if is_beat(r["interval"]) else f"{r['interval_ms']:.0f} ms"
                 for r in rows]
        n_note = f" (mean ± 95% CI, n={rows[0]['n']})" if err else ""
        figures = {
            "interval_vs_changed": plots.metric_figure(
                x, y, yerr=err, logx=True, xlabel="prompt interval P (tokens, log scale)",
                ylabel="% tokens changed", title="Interval vs % tokens changed" + n_note,
                label=label, annotations=names),
            "density_vs_changed": plots.metric_figure(
                [r["mask_density_mean"] for r in rows], y, yerr=err,
                xlabel=f"mask density (codebooks 0–{self.upper_codebook_mask - 1})",
                ylabel="% tokens changed", title="Mask density vs % tokens changed" + n_note,
                label=label, annotations=[f"P={r['interval']}" for r in rows]),
        }
        if rows[0].get("mel_distance_mean") is not None:
            figures["interval_vs_fidelity"] = plots.metric_figure(
                x, [r["chroma_similarity_mean"] for r in rows], logx=True,
                yerr=[r["chroma_similarity_ci95"] or 0.0 for r in rows] if err else None,
                xlabel="prompt interval P (tokens, log scale)", ylabel="chroma similarity",
                title="Interval vs harmonic preservation" + n_note, label=label,
                annotations=names)
        figures.update(self._example_figures(outcomes, session, tokens, ms, label))
        rho = spearman(x, y) if len(x) > 2 else float("nan")
        text = observations(rows, rho, backend) + "\n"
        for line in text.splitlines():
            logger.info(line)
        metrics_out = {"spearman_interval_vs_changed": rho} if np.isfinite(rho) else {}
        report = listening_report_file(every, session, f"{self.name}: listening report")
        summary = Summary(metrics=metrics_out, figures=figures, tables=tables,
                          texts={"observations.txt": text}, files={"report.html": report})
        return self.add_evidence(summary, every, session)
