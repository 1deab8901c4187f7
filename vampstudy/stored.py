"""Compact outcomes: once a trial is recorded, its audio, arrays and figures live in the store.

An :class:`~vampstudy.study.Outcome` as a study returns it holds the trial's decoded audio
(about 1.8 MB for 10 s at 44.1 kHz), its arrays and its rendered figures. Kept for every
trial until the analysis, a study of thousands of trials would need gigabytes. So the
recorder *compacts* each outcome right after its child run is written
(:func:`compact_outcome`): the metrics, series and params stay in memory, while

* ``outcome.audio`` becomes a :class:`StoredAudio`: a read-only mapping whose values are
  read back from the run's ``audio/<name>.wav`` on each access,
* ``outcome.arrays`` becomes a :class:`StoredArrays`, read from ``arrays.npz`` likewise,
* each figure becomes a :class:`StoredFigure` (the matplotlib figure was already closed
  when its PNG was written), whose PNG bytes are read back on each access.

Nothing is cached: a consumer that reads one outcome at a time holds one outcome's audio
at a time. The stored WAVs are 32-bit float (:func:`vampstudy.audio.signal_to_wav_bytes`)
and the arrays are saved losslessly, so what is read back equals what was measured.
Outcomes reloaded by ``--resume`` (:func:`vampstudy.record.reload_outcome`) take the same
form. Files are read from the local artifact folder for a sqlite store, else downloaded
into a temporary folder that is removed straight away.
"""

from __future__ import annotations

import functools
import io
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

__all__ = ["ArtifactReader", "StoredArrays", "StoredAudio", "compact_outcome", "holds_audio"]


class ArtifactReader:
    """Reads one run's artifacts as bytes.

    Parameters
    ----------
    local_dir : Path, optional
        The run's artifact folder when it is on this machine (sqlite stores).
    download : callable, optional
        ``download(path, dst) -> local path`` for any other store (used when
        ``local_dir`` is None).
    """

    def __init__(self, local_dir: Path | None = None,
                 download: Callable[[str, str], str] | None = None):
        if local_dir is None and download is None:
            raise ValueError("ArtifactReader needs a local folder or a download function")
        self.local_dir, self._download = local_dir, download

    def read(self, path: str) -> bytes:
        """The bytes of the artifact ``path`` (e.g. ``audio/output.wav``)."""
        if self.local_dir is not None:
            return (self.local_dir / path).read_bytes()
        with tempfile.TemporaryDirectory(prefix="vampstudy-artifact-") as tmp:
            return Path(self._download(path, tmp)).read_bytes()


class _Stored(Mapping):
    """A read-only mapping of names to values read from the store on each access."""

    def __init__(self, names: Iterable[str], reader: ArtifactReader):
        self._names = tuple(names)
        self._reader = reader

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name) -> bool:
        return name in self._names

    def __getitem__(self, name):
        if name not in self._names:
            raise KeyError(name)
        return self._load(name)

    def _load(self, name):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self._names)!r})"


class StoredAudio(_Stored):
    """name → AudioSignal, read from ``audio/<name>.wav`` of the run on each access."""

    def _load(self, name):
        from .audio import wav_bytes_to_signal

        return wav_bytes_to_signal(self._reader.read(f"audio/{name}.wav"))


class StoredArrays(_Stored):
    """name → numpy array, read from the run's ``arrays.npz`` on each access (that member only)."""

    def _load(self, name):
        with np.load(io.BytesIO(self._reader.read("arrays.npz"))) as data:
            return data[name]


@functools.lru_cache(maxsize=None)
def _stored_figure_class():
    """:class:`StoredFigure`, built on first use (matplotlib is imported only then)."""
    from .plots import RenderedFigure

    class StoredFigure(RenderedFigure):
        """A rendered figure whose PNG is read back from ``figures/<name>.png`` on each access."""

        def __init__(self, reader: ArtifactReader, name: str):  # no PNG kept in memory
            self._reader, self._name = reader, name

        @property
        def png(self) -> bytes:
            return self._reader.read(f"figures/{self._name}.png")

    return StoredFigure


def compact_outcome(outcome, reader: ArtifactReader, figures: bool = True) -> None:
    """Replace the outcome's audio, arrays and figures by handles on its stored run (in place).

    Call it only once the run holds ``audio/*.wav``, ``arrays.npz`` and ``figures/*.png``
    as :func:`vampstudy.record.record_contents` writes them. With ``figures=False`` the
    figures are dropped (a resumed outcome: they are drawn again where needed).
    """
    outcome.audio = StoredAudio(list(outcome.audio), reader)
    outcome.arrays = StoredArrays(list(outcome.arrays), reader)
    outcome.figures = ({name: _stored_figure_class()(reader, name) for name in outcome.figures}
                       if figures else {})


def holds_audio(outcome) -> bool:
    """Whether the outcome keeps decoded audio or arrays in memory (not compacted)."""
    return not (isinstance(outcome.audio, StoredAudio) and isinstance(outcome.arrays, StoredArrays))
