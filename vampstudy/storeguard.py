"""The sqlite database file under a Tracker: statements refused once the file is gone.

Nothing here imports mlflow; :class:`vampstudy.tracking.Tracker` hands in its client.
"""

from __future__ import annotations

from pathlib import Path

from . import stores
from .errors import TrackingError


class StoreFileGone(TrackingError):
    """A statement refused because the sqlite database file vanished or was replaced."""


_OPENED: dict[str, tuple[int, int]] = {}   # sqlite database path → its file when opened


def forget(path: Path) -> None:
    """A Tracker is opening (or creating) the database at ``path``: no statement is refused."""
    _OPENED.pop(str(path), None)


def remember(path: Path, identity: tuple[int, int] | None) -> None:
    """The database file at ``path`` the Tracker opened (:func:`vampstudy.stores.file_identity`)."""
    _OPENED[str(path)] = identity


def guard(client, path: Path) -> None:
    """Refuse every statement, commit and new connection of ``client``'s sqlite store while
    its database file is not the file the Tracker opened (:func:`remember`).

    Without this, a connection MLflow keeps open goes on writing into a deleted file (work
    lost without an error) and a new connection creates an empty database at the path. With
    it, the store call fails with :class:`StoreFileGone`, the probe says why
    (:func:`vampstudy.stores.database_file_problem`), and :mod:`vampstudy.patience` waits for
    the file to come back.
    """
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    engine = getattr(store, "engine", None)
    if engine is None or getattr(engine, "_vampstudy_guarded", False):
        return
    from sqlalchemy import event

    key = str(path)

    def check(*_args, **_kwargs):
        if key not in _OPENED:   # a Tracker is opening (or creating) the store right now
            return None
        problem = stores.database_file_problem(path, _OPENED[key])
        if problem is not None:
            raise StoreFileGone(f"the tracking store refused a write: {problem}")
        return None

    for name in ("before_cursor_execute", "commit", "do_connect"):
        event.listen(engine, name, check)
    engine._vampstudy_guarded = True
