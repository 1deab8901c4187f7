"""A test backend that holds a study mid-way until the test opens a gate (NOT VampNet).

:class:`GatedBackend` is the sleepy test backend (no sleep) whose ``vamp`` in a process
that already vamped once waits until the file named by ``$VAMPSTUDY_TEST_GATE`` exists.
With W workers, a study on it finishes exactly W trials and then holds: a test can stop it
"mid-study" without racing the clock, then create the file and ``--resume`` it. The gate is
an environment variable, not a backend option, so both runs have the same configuration.
Load it by ``gated:GatedBackend`` with ``tests/doubles`` on PYTHONPATH.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from vampstudy.testing import SleepyBackend

GATE_ENV = "VAMPSTUDY_TEST_GATE"


class GatedBackend(SleepyBackend):
    """Vamps once per process freely, then only once ``$VAMPSTUDY_TEST_GATE`` exists."""

    name = "gated-test"

    def __init__(self, device: str = "cpu"):
        super().__init__(device=device, delay=0.0)
        self._calls = 0

    def vamp(self, codes, mask, seed=None, **options):
        gate = os.environ.get(GATE_ENV)
        if self._calls and gate:
            while not Path(gate).exists():
                time.sleep(0.2)
        self._calls += 1
        return super().vamp(codes, mask, seed=seed, **options)

    def options(self) -> dict:
        return {}
