"""Periodic prompt width: how many consecutive steps each periodic prompt keeps."""

from vampstudy.sweep import SweepStudy


class PromptWidthStudy(SweepStudy):
    """Periodic prompt width: keep w consecutive steps at every P-th step (periodic_prompt_width).

    Parameters
    ----------
    widths : tuple of int
        Values of periodic_prompt_width w (steps, centred on each prompt).
    periodic_prompt : int
        Prompt interval P.
    upper_codebook_mask : int
        Codebooks at index >= this are fully regenerated.
    temperature : float
        Sampling temperature.
    """

    name = "prompt-width"

    def __init__(self, widths: tuple[int, ...] = (1, 2, 3, 5, 7), periodic_prompt: int = 13,
                 upper_codebook_mask: int = 3, temperature: float = 1.0):
        self.widths = widths
        self.periodic_prompt = periodic_prompt
        self.upper_codebook_mask = upper_codebook_mask
        self.temperature = temperature

    def sweep_axes(self):
        return {"periodic_prompt_width": tuple(self.widths)}
