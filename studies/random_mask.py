"""Random mask intensity: each position generated with probability r (``rand_mask_intensity``)."""

from vampstudy.sweep import SweepStudy


class RandomMaskStudy(SweepStudy):
    """Random mask intensity: each position is generated with probability r.

    Parameters
    ----------
    intensities : tuple of float
        Values of rand_mask_intensity r in [0, 1].
    upper_codebook_mask : int
        Codebooks at index >= this are fully regenerated.
    temperature : float
        Sampling temperature.
    """

    name = "random-mask"

    def __init__(self, intensities: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9),
                 upper_codebook_mask: int = 14, temperature: float = 1.0):
        self.intensities = intensities
        self.upper_codebook_mask = upper_codebook_mask
        self.temperature = temperature

    def fixed_options(self):
        return {**super().fixed_options(), "periodic_prompt": 0}

    def sweep_axes(self):
        return {"rand_mask_intensity": tuple(self.intensities)}
