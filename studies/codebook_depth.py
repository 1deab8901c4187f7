"""Codebook depth: how many codebooks keep their prompt (VampNet's ``upper_codebook_mask``)."""

from vampstudy.sweep import SweepStudy


class CodebookDepthStudy(SweepStudy):
    """Codebook depth: prompt the first k codebooks, regenerate the rest (upper_codebook_mask).

    Parameters
    ----------
    depths : tuple of int
        Values of upper_codebook_mask k: codebooks at index >= k are fully regenerated.
    periodic_prompt : int
        Periodic prompt interval applied on the prompted codebooks.
    temperature : float
        Sampling temperature.
    typical_filtering : bool
        Typical sampling on or off.
    """

    name = "codebook-depth"

    def __init__(self, depths: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 11, 14),
                 periodic_prompt: int = 7, temperature: float = 1.0,
                 typical_filtering: bool = True):
        self.depths = depths
        self.periodic_prompt = periodic_prompt
        self.temperature = temperature
        self.typical_filtering = typical_filtering

    def sweep_axes(self):
        return {"upper_codebook_mask": tuple(self.depths)}
