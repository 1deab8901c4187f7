"""The Study contract: hook order, params from the signature, required generate."""

import pytest

from vampstudy.runner import run_study
from vampstudy.study import Condition, Outcome, Study, Summary


class Recorder(Study):
    """Records every hook call."""

    name = "recorder"

    def __init__(self, values: tuple[int, ...] = (1, 2), scale: float = 2.0):
        self.values = values
        self.scale = scale
        self.calls_ = []

    def validate(self, backend):
        self.calls_.append("validate")

    def prepare(self, session):
        self.calls_.append("prepare")
        return Summary(params={"prepared": True})

    def iterate(self):
        self.calls_.append("iterate")
        return [Condition({"value": v}) for v in self.values]

    def generate(self, trial, backend):
        self.calls_.append(f"generate:{trial.condition.params['value']}:{trial.seed}")
        return Outcome(metrics={"scaled": trial.condition.params["value"] * self.scale})

    def analyze(self, outcomes, session):
        self.calls_.append(f"analyze:{len(outcomes)}")
        return Summary(metrics={"total": sum(o.metrics["scaled"] for o in outcomes)})


@pytest.mark.parametrize("executor", ["sequential", "pipelined"])
def test_hooks_run_in_order(backend, tracker, music_3s, executor):
    study = Recorder()
    result = run_study(study, backend, tracker, audio=[str(music_3s)], seeds=[0, 1],
                       executor=executor)
    assert study.calls_ == ["validate", "prepare", "iterate", "generate:1:0", "generate:1:1",
                            "generate:2:0", "generate:2:1", "analyze:4"]
    parent = tracker.get_run(result.parent_run_id)
    assert parent.data.metrics["total"] == 12.0
    assert parent.data.params["prepared"] == "True"
    assert parent.data.params["values"] == "1,2" and parent.data.params["scale"] == "2.0"


def test_hooks_run_in_order_across_the_two_processes(backend, tracker, music_3s):
    # the process executor (the default): the model process runs every hook up to generate
    # on this study object; analyze runs in the measuring process (on its copy), and its
    # summary is what the parent run holds
    study = Recorder()
    result = run_study(study, backend, tracker, audio=[str(music_3s)], seeds=[0, 1])
    assert study.calls_ == ["validate", "prepare", "iterate", "generate:1:0", "generate:1:1",
                            "generate:2:0", "generate:2:1"]
    parent = tracker.get_run(result.parent_run_id)
    assert parent.data.metrics["total"] == 12.0 and parent.data.params["prepared"] == "True"
    assert parent.data.params["executor"] == "process"


def test_params_come_from_the_signature():
    assert Recorder(values=(3,)).get_params() == {"values": (3,), "scale": 2.0}


def test_generate_is_required(backend, tracker, music_3s):
    class NoGenerate(Study):
        """Forgot generate."""

    with pytest.raises(NotImplementedError, match="NoGenerate must implement the generate"):
        NoGenerate().generate(None, backend)


def test_unstored_param_is_reported():
    class Forgetful(Study):
        def __init__(self, a: int = 1):
            pass

    with pytest.raises(TypeError, match="missing: \\['a'\\]"):
        Forgetful().get_params()


def test_name_and_description_defaults():
    class MyStudy(Study):
        """First line.

        More."""

    assert MyStudy.name == "MyStudy" and MyStudy.description == "First line."
