"""Artifacts written piece by piece to disk instead of being built in memory.

The listening report of a study embeds every output's audio preview and spectrogram
(about 0.3 MB a trial): built as one string it is held two or three times over
while it is joined, encoded and uploaded, so the analysis' memory grew with the
number of trials (issue 19). A :class:`SpooledFile` takes the page one card at a
time into an unnamed temporary file; :attr:`vampstudy.study.Record.files` accepts
it beside plain bytes and the tracker copies it into the run's artifacts in blocks.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

#: Bytes copied at a time from a spooled file into the artifact store.
COPY_BLOCK = 1 << 20


class SpooledFile:
    """UTF-8 text appended to an unnamed temporary file (gone when closed or collected).

    Attributes
    ----------
    size : int
        Bytes written so far.
    largest_write : int
        The largest single write in bytes: what the writer held at once.

    Examples
    --------
    >>> f = SpooledFile()
    >>> f.write("<p>one</p>"); f.write("<p>two</p>")
    >>> f.read()
    b'<p>one</p><p>two</p>'
    """

    def __init__(self):
        self._file = tempfile.TemporaryFile()
        self.size = 0
        self.largest_write = 0

    def write(self, text: str) -> None:
        """Append ``text`` (encoded as UTF-8)."""
        data = text.encode()
        self._file.seek(0, 2)
        self._file.write(data)
        self.size += len(data)
        self.largest_write = max(self.largest_write, len(data))

    def read(self) -> bytes:
        """The whole content (in memory: for tests and small files)."""
        self._file.seek(0)
        return self._file.read()

    def copy_to(self, path: str | Path) -> None:
        """Write the content to ``path`` in blocks of :data:`COPY_BLOCK` bytes."""
        self._file.flush()
        self._file.seek(0)
        with open(path, "wb") as out:
            shutil.copyfileobj(self._file, out, COPY_BLOCK)

    def close(self) -> None:
        """Delete the temporary file."""
        self._file.close()

    def __reduce__(self):
        # crossing a process boundary: the content travels as bytes (read into memory once)
        return (_from_bytes, (self.read(),))

    def __repr__(self) -> str:
        return f"SpooledFile({self.size:,} bytes)"


def _from_bytes(data: bytes) -> SpooledFile:
    f = SpooledFile()
    f.write(data.decode())
    return f


def write_artifact(path: Path, data) -> None:
    """Write one artifact's content, ``bytes`` or a :class:`SpooledFile`, to ``path``."""
    if isinstance(data, SpooledFile):
        data.copy_to(path)
    else:
        path.write_bytes(data)
