"""Anchored periodic prompt: a mask of one's own (docs/writing-a-study.md, "A mask of your own")."""

from vampstudy import Condition, MaskingStudy
from vampstudy.errors import ConfigError
from vampstudy.masks import keep_both, keep_codebooks, keep_either, keep_periodic


class AnchoredPeriodicStudy(MaskingStudy):
    """Anchored periodic prompt: keep codebook 0 everywhere and every P-th step of codebooks 1-2.

    Parameters
    ----------
    periods : tuple of int
        Values of P, in token steps.
    temperature : float
        Sampling temperature.
    """

    name = "anchored-periodic"

    def __init__(self, periods: tuple[int, ...] = (3, 7, 13), temperature: float = 1.0):
        self.periods = periods
        self.temperature = temperature

    def validate(self, backend):
        if any(int(p) < 1 for p in self.periods):
            raise ConfigError(f"periods must be >= 1 token step, got {self.periods}", "--periods")

    def iterate(self):
        return [Condition({"period": int(p)}) for p in self.periods]

    def mask(self, trial, backend):
        codes, period = trial.clip.codes, trial.condition.params["period"]
        every_pth = keep_both(keep_periodic(codes, period), keep_codebooks(codes, 1, 3))
        return keep_either(keep_codebooks(codes, 0, 1), every_pth)   # codebooks 3+: generated

    def sampling_options(self, condition):
        return {"temperature": self.temperature}
