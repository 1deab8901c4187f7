"""Inpainting context: keep the first and last s seconds, regenerate the middle."""

from vampstudy.study import Condition
from vampstudy.sweep import Range, SweepStudy


class InpaintingStudy(SweepStudy):
    """Inpainting context: keep s seconds at both ends (prefix_s = suffix_s = s), fill the middle.

    Parameters
    ----------
    context_s : tuple of float
        Seconds of context kept at each end.
    upper_codebook_mask : int
        Codebooks at index >= this are regenerated everywhere.
    temperature : float
        Sampling temperature.
    """

    name = "inpainting"
    param_ranges = {"context_s": Range(float, 0.0)}

    def __init__(self, context_s: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0),
                 upper_codebook_mask: int = 14, temperature: float = 1.0):
        self.context_s = context_s
        self.upper_codebook_mask = upper_codebook_mask
        self.temperature = temperature

    def sweep_axes(self):
        return {"context_s": tuple(self.context_s)}

    def mask_options(self, condition: Condition) -> dict:
        s = condition.params["context_s"]
        return {"periodic_prompt": 0, "prefix_s": s, "suffix_s": s,
                "upper_codebook_mask": self.upper_codebook_mask}
