"""A study's constructor signature → click options (and values from a config file).

Supported parameter types: ``int``, ``float``, ``bool`` (``--x/--no-x``),
``str``, ``Optional[...]`` of those, and sequences (``tuple[int, ...]``,
``list[float]`` …) given comma-separated (``--intervals 2,3,5``). A study can
name sequence parameters in its ``cli_multiple`` class attribute to take them
as a repeated option instead (``--param a=1,2 --param b=3``), and give any
parameter its own click type in ``cli_types`` (name → ParamType). Help text
comes from the numpy-style "Parameters" section of the class docstring.
"""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import click

from .errors import ConfigError


class ListType(click.ParamType):
    """Comma-separated values of one item type, e.g. ``2,3,5``."""

    def __init__(self, item: type):
        self.item = item
        self.name = f"{item.__name__},..."

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            items = list(value)
        else:
            items = [v.strip() for v in str(value).split(",") if v.strip()]
        if not items:
            self.fail("expected a comma-separated list, got nothing", param, ctx)
        out = []
        for v in items:
            try:
                out.append(self._one(v))
            except (TypeError, ValueError):
                self.fail(f"{v!r} is not a valid {self.item.__name__} (in {value!r}); "
                          f"give comma-separated {self.item.__name__}s like 2,3,5", param, ctx)
        return tuple(out)

    def _one(self, v):
        if self.item is int:
            if isinstance(v, float) and not v.is_integer():
                raise ValueError(v)
            if isinstance(v, str) and not re.fullmatch(r"[+-]?\d+", v):
                raise ValueError(v)
            return int(v)
        return self.item(v)


def _unwrap(annotation):
    """Return (base type, is_sequence)."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if len(args) == 1:
            return _unwrap(args[0])
    if origin in (tuple, list, typing.Sequence) or (origin and getattr(origin, "__name__", "") in
                                                      ("Sequence",)):
        item = args[0] if args else str
        return item, True
    return annotation, False


def param_docs(cls) -> dict[str, str]:
    """Parameter descriptions from a numpy-style docstring."""
    doc = inspect.getdoc(cls) or ""
    match = re.search(r"Parameters\n-+\n(.*?)(?:\n\n[A-Z][^\n]*\n-+\n|\Z)", doc, re.S)
    if not match:
        return {}
    docs, current = {}, None
    for line in match.group(1).splitlines():
        head = re.match(r"^(\w+)\s*:", line)
        if head and not line.startswith(" "):
            current = head.group(1)
            docs[current] = ""
        elif current and line.strip():
            docs[current] = (docs[current] + " " + line.strip()).strip()
    return docs


def _show(default, required: bool) -> bool:
    """Show a default in --help unless there is none (None is documented in the help text)."""
    return not required and default is not None


def study_options(cls) -> list[click.Option]:
    """click options for every constructor parameter of a Study class."""
    hints = typing.get_type_hints(cls.__init__)
    docs = param_docs(cls)
    options = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        flag = "--" + p.name.strip("_").replace("_", "-")
        base, is_seq = _unwrap(hints.get(p.name, type(p.default)))
        required = p.default is inspect.Parameter.empty
        default = None if required else p.default
        help_text = docs.get(p.name, "")
        custom = getattr(cls, "cli_types", {}).get(p.name)
        if custom is not None:
            options.append(click.Option([flag, p.name], type=custom, default=default,
                                        required=required, help=help_text,
                                        show_default=_show(default, required)))
            continue
        if p.name in getattr(cls, "cli_multiple", ()):
            options.append(click.Option([flag, p.name], multiple=True, type=str,
                                        default=default, required=required, help=help_text,
                                        show_default=_show(default, required)))
            continue
        if is_seq:
            ptype = ListType(base if base in (int, float, str) else str)
        elif base is bool:
            options.append(click.Option([f"{flag}/--no-{flag[2:]}", p.name], default=default,
                                        required=required, help=help_text, show_default=True))
            continue
        elif base in (int, float, str):
            ptype = base
        else:
            ptype = str
        options.append(click.Option([flag, p.name], type=ptype, default=default,
                                    required=required, help=help_text,
                                    show_default=_show(default, required)))
    return options


def load_config_file(path: str | Path) -> dict:
    """Read a YAML (or JSON) mapping of parameter names to values."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read --config file {p}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config file {p} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config file {p} must hold a mapping of parameter: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
