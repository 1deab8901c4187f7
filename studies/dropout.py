"""Time dropout: force a fraction of whole time steps to be generated (``_dropout``)."""

from vampstudy.sweep import SweepStudy


class DropoutStudy(SweepStudy):
    """Time dropout: force a fraction of time steps to be generated on every codebook (_dropout).

    Parameters
    ----------
    dropouts : tuple of float
        Values of _dropout: int(T x dropout) steps, drawn with replacement, are masked.
    periodic_prompt : int
        Prompt interval the dropout thins out.
    upper_codebook_mask : int
        Codebooks at index >= this are fully regenerated.
    temperature : float
        Sampling temperature.
    """

    name = "dropout"

    def __init__(self, dropouts: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4, 0.8),
                 periodic_prompt: int = 3, upper_codebook_mask: int = 3,
                 temperature: float = 1.0):
        self.dropouts = dropouts
        self.periodic_prompt = periodic_prompt
        self.upper_codebook_mask = upper_codebook_mask
        self.temperature = temperature

    def sweep_axes(self):
        return {"_dropout": tuple(self.dropouts)}
