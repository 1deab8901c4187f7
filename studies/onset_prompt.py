"""Onset prompt: keep the tokens around detected onsets (``onset_mask_width``)."""

from vampstudy.sweep import SweepStudy


class OnsetPromptStudy(SweepStudy):
    """Onset prompt: keep the steps within w of each detected onset (onset_mask_width).

    Parameters
    ----------
    widths : tuple of int
        Values of onset_mask_width w (steps either side of an onset).
    upper_codebook_mask : int
        Codebooks at index >= this are fully regenerated.
    temperature : float
        Sampling temperature.
    """

    name = "onset-prompt"

    def __init__(self, widths: tuple[int, ...] = (1, 2, 4, 8), upper_codebook_mask: int = 3,
                 temperature: float = 1.0):
        self.widths = widths
        self.upper_codebook_mask = upper_codebook_mask
        self.temperature = temperature

    def fixed_options(self):
        return {**super().fixed_options(), "periodic_prompt": 0}

    def sweep_axes(self):
        return {"onset_mask_width": tuple(self.widths)}
