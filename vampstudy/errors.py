"""Errors that vampstudy reports to the user.

Every error raised for bad input is a :class:`VampstudyError`: its message
names the input that is wrong and says how to fix it. The CLI turns these
into one line on stderr and a non-zero exit code; library users can catch
them by type.
"""


def _rebuilt(cls, args: tuple, state: dict) -> BaseException:
    """An error rebuilt from its class, ``args`` and attributes (see :meth:`VampstudyError.__reduce__`)."""
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


def _picklable_state(exc: BaseException) -> dict:
    import pickle

    state = {}
    for key, value in exc.__dict__.items():
        try:
            pickle.dumps(value)
        except Exception:   # e.g. a store error that holds a connection: its words are enough
            value = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else None
        state[key] = value
    return state


class VampstudyError(Exception):
    """Base class for user-facing errors (bad input, missing dependency).

    An error raised in the measuring process reaches the model process whole (its class,
    message and attributes) whatever its ``__init__`` takes.
    """

    def __reduce__(self):
        return _rebuilt, (type(self), self.args, _picklable_state(self))


class AudioError(VampstudyError):
    """An audio file is missing, unreadable, not audio, silent or too short."""


class ConfigError(VampstudyError, ValueError):
    """A study or backend parameter is out of range or malformed.

    Parameters
    ----------
    message : str
        What is wrong and the allowed values.
    option : str, optional
        The command-line option it came from (e.g. ``--intensities``); the CLI then
        reports it as a usage error of that option (exit code 2).
    """

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


class MaskError(VampstudyError, ValueError):
    """A study's mask is not a mask of its trial's codes (shape, dtype, device or values)."""


class BackendUnavailable(VampstudyError):
    """A backend was requested whose dependencies are not installed."""


class TrackingError(VampstudyError):
    """The MLflow tracking store cannot be reached or used."""


class StudyNotFound(VampstudyError, LookupError):
    """No study is registered under the requested name."""

