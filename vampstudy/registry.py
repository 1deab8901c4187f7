"""Finding studies by name: built-in files, entry points, and ``FILE.py:Class``.

* Built-in studies are the :class:`~vampstudy.study.Study` subclasses defined
  in the modules of the top-level ``studies`` package (one file each).
* Other packages register studies under the ``vampstudy.studies``
  entry-point group (``name = package.module:Class``).
* ``path/to/file.py:ClassName`` loads a study straight from a file.

Two studies with one name are a clash: :func:`find_study` refuses the name
and says where each came from; ``vampstudy list`` shows both.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import pkgutil
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from .errors import ConfigError, StudyNotFound
from .study import MaskingStudy, Study

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "vampstudy.studies"
_ABSTRACT = {Study, MaskingStudy}


@dataclass(frozen=True)
class StudyEntry:
    name: str
    cls: type
    source: str   # "built-in (studies/periodic.py)", "entry point (pkg 1.0)", "file (...)"

    @property
    def description(self) -> str:
        return self.cls.description


def _is_study(obj, module_name: str | None = None) -> bool:
    return (inspect.isclass(obj) and issubclass(obj, Study) and obj not in _ABSTRACT
            and not inspect.isabstract(obj) and not obj.__dict__.get("abstract", False)
            and (module_name is None or obj.__module__ == module_name))


def _builtin_entries() -> list[StudyEntry]:
    import studies

    found = []
    for info in sorted(pkgutil.iter_modules(studies.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"studies.{info.name}")
        for _, obj in inspect.getmembers(module, lambda o: _is_study(o, module.__name__)):
            found.append(StudyEntry(obj.name, obj, f"built-in (studies/{info.name}.py)"))
    return found


def _entry_point_entries() -> list[StudyEntry]:
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        where = f"entry point ({dist.name} {dist.version})" if dist else f"entry point ({ep.value})"
        try:
            obj = ep.load()
        except Exception as exc:
            logger.warning("study entry point %r (%s) could not be loaded: %s", ep.name, ep.value, exc)
            continue
        if not _is_study(obj):
            logger.warning("entry point %r (%s) is not a Study subclass; ignored", ep.name, ep.value)
            continue
        found.append(StudyEntry(ep.name, obj, where))
    return found


def all_entries() -> list[StudyEntry]:
    """Every registered study, clashes included (built-ins first)."""
    return _builtin_entries() + _entry_point_entries()


def registered() -> dict[str, list[StudyEntry]]:
    """Registered studies by name; a name with more than one entry is a clash."""
    by_name: dict[str, list[StudyEntry]] = {}
    for entry in all_entries():
        if entry.cls in [e.cls for e in by_name.get(entry.name, [])]:
            continue
        by_name.setdefault(entry.name, []).append(entry)
    return by_name


def load_study_file(spec: str) -> StudyEntry:
    """Load ``path/to/file.py:ClassName`` (``:ClassName`` optional when the file has one study)."""
    path_str, _, cls_name = spec.partition(":")
    path = Path(path_str)
    if not path.is_file():
        raise StudyNotFound(f"study file not found: {path} (from {spec!r})")
    module_name = f"vampstudy_user_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ConfigError(f"could not import study file {path}: {type(exc).__name__}: {exc}") from exc
    studies = {n: o for n, o in vars(module).items() if _is_study(o, module_name)}
    if cls_name:
        if cls_name not in studies:
            raise StudyNotFound(f"{path} defines no Study subclass named {cls_name!r}; "
                                f"it defines: {', '.join(sorted(studies)) or 'none'}")
        cls = studies[cls_name]
    elif len(studies) == 1:
        cls = next(iter(studies.values()))
    else:
        raise StudyNotFound(f"{path} defines {len(studies)} studies "
                            f"({', '.join(sorted(studies)) or 'none'}); name one as FILE:Class")
    return StudyEntry(cls.name, cls, f"file ({path})")


def find_study(name: str) -> StudyEntry:
    """The study registered as ``name``, or loaded from ``FILE.py:Class``."""
    if ".py" in name:
        return load_study_file(name)
    by_name = registered()
    if name not in by_name:
        raise StudyNotFound(f"unknown study {name!r}; available: {', '.join(sorted(by_name))} "
                            "(see `vampstudy list`), or pass path/to/file.py:ClassName")
    entries = by_name[name]
    if len(entries) > 1:
        raise ConfigError(f"study name {name!r} is registered more than once: "
                          + "; ".join(f"{e.cls.__module__}.{e.cls.__qualname__} from {e.source}"
                                      for e in entries)
                          + ". Uninstall one, or run it from its file as FILE.py:Class")
    return entries[0]
