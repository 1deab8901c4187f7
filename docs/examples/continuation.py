"""Continuation: keep the opening as a prompt and let the model continue the clip.

This file is the worked example of docs/writing-a-study.md; the test suite runs it.
"""

from vampstudy import Condition, MaskingStudy, plots


class ContinuationStudy(MaskingStudy):
    """Continuation: keep the first s seconds, regenerate the rest, measure the drift.

    Parameters
    ----------
    prompt_s : tuple of float
        Seconds of the opening kept as the prompt.
    temperature : float
        Sampling temperature.
    """

    name = "continuation"

    def __init__(self, prompt_s: tuple[float, ...] = (0.5, 1.0, 2.0), temperature: float = 1.0):
        self.prompt_s = prompt_s          # store every parameter under its own name
        self.temperature = temperature

    def iterate(self):
        return [Condition({"prompt_s": s}) for s in self.prompt_s]

    def mask_options(self, condition):
        return {"prefix_s": condition.params["prompt_s"], "periodic_prompt": 0,
                "upper_codebook_mask": 14}

    def sampling_options(self, condition):
        return {"temperature": self.temperature}

    def measure(self, trial, outcome, backend):
        # fraction of codebooks changed at each step after the prompt
        changed = (outcome.arrays["codes_out"] != outcome.arrays["codes_in"]).mean(axis=(0, 1))
        start = backend.s2t(trial.condition.params["prompt_s"])
        tail = changed[start:]
        outcome.metrics["continuation_changed_pct"] = 100 * float(tail.mean())
        outcome.arrays["changed_per_step"] = changed
        return outcome

    def analyze(self, outcomes, session):
        summary = super().analyze(outcomes, session)     # the default table
        summary.figures["prompt_vs_change"] = plots.condition_figure(
            outcomes, "prompt_s", "continuation_changed_pct",
            label=plots.backend_label(session.backend),
            title="Continuation drift", ylabel="% changed after the prompt")
        return summary
