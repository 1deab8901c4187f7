"""Sampling temperature: how sharply the model commits to its most likely tokens."""

import math

import torch

from vampstudy.sweep import SweepStudy


def generated_entropy(codes_out: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over codebooks of the empirical entropy (nats) of the tokens generated there."""
    values = []
    for c in range(codes_out.shape[1]):
        tokens = codes_out[0, c][mask[0, c].bool()]
        if tokens.numel() == 0:
            continue
        _, counts = torch.unique(tokens, return_counts=True)
        p = counts.double() / counts.sum()
        values.append(float(-(p * p.log()).sum()))
    return sum(values) / len(values) if values else math.nan


class TemperatureStudy(SweepStudy):
    """Sampling temperature: variation vs. commitment of the sampler (temperature).

    Parameters
    ----------
    temperatures : tuple of float
        Sampling temperatures (0 = greedy).
    periodic_prompt : int
        Prompt interval.
    upper_codebook_mask : int
        Codebooks at index >= this are fully regenerated.
    typical_filtering : bool
        Typical sampling on or off.
    """

    name = "temperature"
    plot_metrics = ("tokens_changed_pct", "generated_entropy")

    def __init__(self, temperatures: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 1.5),
                 periodic_prompt: int = 7, upper_codebook_mask: int = 3,
                 typical_filtering: bool = True):
        self.temperatures = temperatures
        self.periodic_prompt = periodic_prompt
        self.upper_codebook_mask = upper_codebook_mask
        self.typical_filtering = typical_filtering

    def sweep_axes(self):
        return {"temperature": tuple(self.temperatures)}

    def measure(self, trial, outcome, backend):
        outcome.metrics["generated_entropy"] = generated_entropy(
            torch.as_tensor(outcome.arrays["codes_out"]), torch.as_tensor(outcome.arrays["mask"]))
        return outcome
