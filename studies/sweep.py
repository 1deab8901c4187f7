"""Generic sweep: the cartesian product of any VampNet mask/sampling options."""

from vampstudy.errors import ConfigError
from vampstudy.sweep import OPTION_NAMES, SweepStudy, parse_value


class GenericSweepStudy(SweepStudy):
    """Generic sweep: the cartesian product of any build_mask / vamp options.

    Parameters
    ----------
    param : tuple of str
        One sweep axis per value, written OPTION=V1,V2,... (repeat the option), e.g.
        --param periodic_prompt=3,7,13 --param upper_codebook_mask=1,3.
    temperature : float
        Sampling temperature (unless swept).
    """

    name = "sweep"
    #: ``--param`` is given once per axis rather than comma-separated
    cli_multiple = ("param",)

    def __init__(self, param: tuple[str, ...] = ("periodic_prompt=3,7,13",),
                 temperature: float = 1.0):
        self.param = param
        self.temperature = temperature

    def sweep_axes(self):
        axes = {}
        for spec in self.param:
            name, sep, values = str(spec).partition("=")
            name = name.strip()
            if not sep or not values.strip():
                raise ConfigError(f"--param {spec!r}: write OPTION=V1,V2,... "
                                  "e.g. --param periodic_prompt=3,7,13", option="--param")
            if name not in OPTION_NAMES:
                raise ConfigError(f"--param {spec!r}: unknown option {name!r}; choose from "
                                  f"{', '.join(OPTION_NAMES)}", option="--param")
            if name in axes:
                raise ConfigError(f"--param {name} is given twice; list all its values at once",
                                  option="--param")
            axes[name] = tuple(parse_value(v) for v in values.split(",") if v.strip())
        return axes

    def axis_flag(self, option, values):
        return f"--param {option}"

    # Options not swept keep VampNet's defaults (periodic_prompt=7, upper_codebook_mask=3, ...).
