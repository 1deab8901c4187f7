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
from vampstudy.metrics import interval_ms
from vampstudy.study import Condition, MaskingStudy, Outcome, Session, Summary, Trial
from vampstudy.summary import condition_table, observations, spearman

logger = logging.getLogger(__name__)

NOTEBOOK_INTERVALS = (2, 3, 5, 7, 10, 13, 20, 30, 50, 70, 100)


class PeriodicIntervalStudy(MaskingStudy):
    """Periodic prompt interval: keep every P-th token, regenerate the rest.

    Parameters
    ----------
    intervals : tuple of int
        Prompt intervals P to sweep (token steps between kept tokens).
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
    """

    name = "periodic"

    def __init__(self, intervals: tuple[int, ...] = NOTEBOOK_INTERVALS,
                 upper_codebook_mask: int = 3, dropout: float = 0.0, temperature: float = 1.0,
                 typical_filtering: bool = True, sampling_steps: int = 12,
                 spectrogram_intervals: tuple[int, ...] = (3, 7, 13, 30, 70)):
        self.intervals = intervals
        self.upper_codebook_mask = upper_codebook_mask
        self.dropout = dropout
        self.temperature = temperature
        self.typical_filtering = typical_filtering
        self.sampling_steps = sampling_steps
        self.spectrogram_intervals = spectrogram_intervals

    # ------------------------------------------------------------ hooks
    def validate(self, backend) -> None:
        bad = [p for p in self.intervals
               if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p <= 0]
        if not self.intervals or bad:
            raise ConfigError(f"--intervals must be positive integers, got {list(self.intervals)}"
                              f"{f' (bad: {bad})' if bad else ''}; e.g. --intervals 2,3,5,7")
        if len(set(self.intervals)) != len(self.intervals):
            raise ConfigError(f"--intervals has duplicates: {list(self.intervals)}")
        if not 1 <= self.upper_codebook_mask <= backend.n_codebooks:
            raise ConfigError(f"--upper-codebook-mask must be in 1..{backend.n_codebooks} for the "
                              f"{backend.name} backend, got {self.upper_codebook_mask}")
        if not 0.0 <= self.dropout <= 1.0:
            raise ConfigError(f"--dropout must be in [0, 1], got {self.dropout}")
        if self.temperature < 0:
            raise ConfigError(f"--temperature must be >= 0, got {self.temperature}")
        if self.sampling_steps < 1:
            raise ConfigError(f"--sampling-steps must be >= 1, got {self.sampling_steps}")

    def prepare(self, session: Session) -> Summary:
        backend = session.backend
        shortest = min(c.n_steps for c in session.clips)
        sparse = [p for p in self.intervals if int(np.ceil(shortest / p)) <= 1]
        if sparse:
            logger.warning("intervals %s leave at most one prompt token in the shortest clip "
                           "(%d steps, %.2f s)", sparse, shortest, backend.t2s(shortest))
        clip = session.clips[0]
        params = {"tokens_per_second": round(backend.tokens_per_second, 4),
                  "ms_per_token": round(backend.ms_per_token, 4),
                  "intervals_ms": [round(interval_ms(p, backend.hop_length, backend.sample_rate), 1)
                                   for p in self.intervals]}
        if sparse:
            params["intervals_single_prompt"] = sparse
        logger.info("codes %s: %.2f tokens/s, %.2f ms per token", tuple(clip.codes.shape),
                    backend.tokens_per_second, backend.ms_per_token)
        return Summary(params=params)

    def iterate(self) -> list[Condition]:
        return [Condition({"interval": int(p)}, label=f"interval={int(p)}") for p in self.intervals]

    def mask_options(self, condition: Condition) -> dict:
        return {"periodic_prompt": condition.params["interval"],
                "upper_codebook_mask": self.upper_codebook_mask, "_dropout": self.dropout}

    def sampling_options(self, condition: Condition) -> dict:
        return {"temperature": self.temperature, "typical_filtering": self.typical_filtering,
                "_sampling_steps": self.sampling_steps, "batch_size": 1}

    def measure(self, trial: Trial, outcome: Outcome, backend) -> Outcome:
        p = trial.condition.params["interval"]
        outcome.params["interval_ms"] = round(interval_ms(p, backend.hop_length,
                                                          backend.sample_rate), 3)
        outcome.metrics["expected_density"] = 1.0 - 1.0 / p
        return outcome

    def analyze(self, outcomes: list[Outcome], session: Session) -> Summary:
        backend = session.backend
        label = plots.backend_label(backend)
        ms = {p: interval_ms(p, backend.hop_length, backend.sample_rate) for p in self.intervals}
        rows = condition_table(outcomes, ["mask_density", "tokens_changed_pct",
                                          "masked_changed_pct", "kept_changed_pct"])
        rows = [{"interval": r["interval"], "interval_ms": round(ms[r["interval"]], 1),
                 "expected_density": round(1 - 1 / r["interval"], 4), **r} for r in rows]
        rows.sort(key=lambda r: r["interval"])
        x = [r["interval"] for r in rows]
        y = [r["tokens_changed_pct_mean"] for r in rows]
        err = [r["tokens_changed_pct_ci95"] for r in rows] if rows[0]["n"] > 1 else None
        figures = {
            "interval_vs_changed": plots.metric_figure(
                x, y, yerr=err, logx=True, xlabel="prompt interval P (tokens, log scale)",
                ylabel="% tokens changed", title="Interval vs % tokens changed", label=label,
                annotations=[f"{ms[p]:.0f} ms" for p in x]),
            "density_vs_changed": plots.metric_figure(
                [r["mask_density_mean"] for r in rows], y, yerr=err,
                xlabel=f"mask density (codebooks 0–{self.upper_codebook_mask - 1})",
                ylabel="% tokens changed", title="Mask density vs % tokens changed", label=label,
                annotations=[f"P={p}" for p in x]),
        }
        first = {}
        for o in outcomes:  # one example per interval: first clip, first seed
            first.setdefault(o.trial.condition.params["interval"], o)
        masks = [(f"P={p} ({ms[p]:.0f} ms), density {first[p].metrics['mask_density']:.3f}",
                  torch.as_tensor(first[p].arrays["mask"])) for p in sorted(first)
                 if "mask" in first[p].arrays]
        if masks:
            figures["mask_grid"] = plots.mask_grid_figure(masks, label)
        spec_items = [("original", session.clips[0].signal)]
        spec_items += [(f"P={p} ({ms[p]:.0f} ms)", first[p].audio["output"])
                       for p in self.spectrogram_intervals
                       if p in first and "output" in first[p].audio
                       and first[p].trial.clip is session.clips[0]]
        figures["spectrogram_grid"] = plots.spectrogram_grid_figure(spec_items, label)
        rho = spearman(x, y) if len(x) > 2 else float("nan")
        text = observations(rows, rho, backend)
        for line in text.splitlines():
            logger.info(line)
        metrics = {"spearman_interval_vs_changed": rho} if np.isfinite(rho) else {}
        return Summary(metrics=metrics, figures=figures, tables={"summary": rows},
                       texts={"observations.txt": text})
