"""The ``vampstudy`` command line: a thin click layer over the library.

Each command parses its options, calls one library function and formats
the result; library errors (:class:`~vampstudy.errors.VampstudyError`)
become one-line messages with exit code 1.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
import warnings

import click
from click.core import ParameterSource

from .errors import ConfigError, VampstudyError

logger = logging.getLogger("vampstudy")

#: Tables `vampstudy show` prints after the summary, when the study logged them.
COMPARISON_TABLES = (
    ("paired_comparisons", "paired comparisons of neighbouring conditions (b - a)"),
    ("noise_comparisons", "each condition vs its noise control (b - a; > 0: the model beats "
                          "random tokens)"),
)
RUNNER_CONFIG_KEYS = ("audio", "seed", "seeds", "backend", "device", "experiment", "controls",
                      "embedding")


def _setup_logging(verbose: int) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("vampstudy").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("studies").setLevel(logging.INFO if verbose else logging.WARNING)
    for noisy in ("alembic", "mlflow", "urllib3", "numba", "matplotlib", "mlflow.store.db.utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose > 1 else logging.ERROR)
    if verbose:   # MLflow's INFO (kept by vampstudy.tracking when it imports mlflow)
        logging.getLogger("mlflow").setLevel(logging.INFO)
    else:         # no "View run … at" / "View experiment at" pair per run on the terminal
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if not verbose:
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


def _errors(fn):
    """Turn library errors into click errors: one line, exit code 1 — or a usage error of the
    option (exit code 2) when a :class:`ConfigError` names the option it came from."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            if exc.option:
                raise _usage_error(exc) from exc
            raise click.ClickException(str(exc)) from exc
        except VampstudyError as exc:
            raise click.ClickException(str(exc)) from exc
        except KeyboardInterrupt:
            click.echo("\ninterrupted (exit 130)", err=True)
            sys.exit(130)
    return wrapper


def _usage_error(exc: ConfigError) -> click.BadParameter:
    """``Error: Invalid value for '--intensities': …`` with the command's usage line."""
    message = str(exc)
    for prefix in (f"{exc.option}: ", f"{exc.option} "):
        if message.startswith(prefix):
            message = message[len(prefix):]
            break
    return click.BadParameter(message, ctx=click.get_current_context(silent=True),
                              param_hint=f"'{exc.option}'")


def _experiment_name(ctx, param, value):
    """click callback: an experiment name is any non-empty string (never a path)."""
    from .stores import check_experiment_name

    if value is None:
        return None
    try:
        return check_experiment_name(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).removeprefix("--experiment: "), ctx, param) from exc


def tracking_option(fn):
    return click.option("--tracking-uri", metavar="URI", default=None,
                        help="MLflow tracking URI. Default: $MLFLOW_TRACKING_URI, else "
                             "sqlite:///mlruns/mlflow.db under the current folder.")(fn)


def backend_options(fn):
    """--backend, --device and the VampNet checkpoint options, shared by run and check."""
    opts = [
        click.option("--backend", default="auto", show_default=True,
                     help="auto (vampnet when installed, else reference), vampnet, reference, "
                          "or a backend registered by a plugin."),
        click.option("--device", default="auto", show_default=True,
                     type=click.Choice(["auto", "cpu", "cuda"]),
                     help="auto picks cuda when available."),
        click.option("--coarse-ckpt", type=click.Path(dir_okay=False), default=None,
                     help="VampNet: local coarse checkpoint (else Interface.default())."),
        click.option("--c2f-ckpt", type=click.Path(dir_okay=False), default=None,
                     help="VampNet: local coarse-to-fine checkpoint."),
        click.option("--codec-ckpt", type=click.Path(dir_okay=False), default=None,
                     help="VampNet: local codec checkpoint."),
        click.option("--coarse-lora-ckpt", type=click.Path(dir_okay=False), default=None,
                     help="VampNet: LoRA fine-tune for the coarse model."),
        click.option("--c2f-lora-ckpt", type=click.Path(dir_okay=False), default=None,
                     help="VampNet: LoRA fine-tune for the coarse-to-fine model."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


DEFAULT_MAX_SECONDS = 600.0  # vampstudy.audio.DEFAULT_MAX_SECONDS (not imported: keeps --help fast)
DEFAULT_PATIENCE = 300.0     # vampstudy.patience.DEFAULT_PATIENCE (likewise)
VAMPNET_ONLY = ("coarse_ckpt", "c2f_ckpt", "codec_ckpt", "coarse_lora_ckpt", "c2f_lora_ckpt")


def make_backend(backend: str, device: str, **ckpts):
    """Load the backend named on the command line and print a banner naming it."""
    from .backends import load_backend, resolve_backend_name

    name = resolve_backend_name(backend)
    given = {k: v for k, v in ckpts.items() if v}
    if given and name != "vampnet":
        raise click.UsageError(f"{', '.join('--' + k.replace('_', '-') for k in given)} "
                               f"only apply to --backend vampnet (backend is {name})")
    b = load_backend(name, device=device, **given)
    note = "" if b.is_vampnet else "  [NOT VampNet: an offline stand-in]"
    click.echo(f"backend: {b.name} — {b.description} on {b.device}{note}", err=True)
    return b


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More logging (-vv for libraries too).")
@click.version_option(package_name="vampstudy")
def main(verbose: int):
    """Tracked, repeatable masking studies for VampNet-style token models.

    \b
    Example:
        vampstudy run periodic            # the periodic-prompt study on the demo clip
        vampstudy ui                      # open the results in MLflow
    """
    _setup_logging(verbose)


# ------------------------------------------------------------------ run
class StudyGroup(click.Group):
    """``vampstudy run NAME``: one subcommand per registered study, built from its signature."""

    def list_commands(self, ctx):
        from .registry import registered

        return sorted(registered())

    def get_command(self, ctx, name):
        from .registry import find_study

        try:
            entry = find_study(name)
        except VampstudyError as exc:
            raise click.UsageError(str(exc), ctx) from exc
        return _study_command(entry, name)


def _input_options(cls) -> list[click.Option]:
    """Options of `vampstudy run STUDY`: inputs, seeds, experiment, evidence."""
    return [
        click.Option(["--audio"], multiple=True, metavar="PATH",
                     help="Audio file, folder or glob (repeatable). Default: the built-in demo clip."),
        click.Option(["--seed"], type=int, default=0, show_default=True,
                     help="Random seed of every condition."),
        click.Option(["--seeds"], default=None, metavar="N,N,...",
                     help="Run each condition once per seed (overrides --seed), e.g. 0,1,2."),
        click.Option(["--repeats"], type=click.IntRange(min=1), default=None, metavar="N",
                     help="Run each condition with seeds 0..N-1 (same as --seeds 0,1,...,N-1)."),
        click.Option(["--experiment"], default=None, callback=_experiment_name,
                     help="MLflow experiment: any non-empty name (artifacts go to a folder "
                          f"named by the experiment's id). Default: the study name ({cls.name})."),
        click.Option(["--resume"], is_flag=True,
                     help="Continue the newest unfinished run of the same configuration."),
        click.Option(["--config"], type=click.Path(exists=True, dir_okay=False), default=None,
                     help="YAML file of study parameters (command-line options win)."),
        click.Option(["--visqol"], is_flag=True,
                     help="Also measure ViSQOL MOS-LQO of every output (slow; needs "
                          "visqol-python)."),
        click.Option(["--controls/--no-controls"], default=None,
                     help="Masking studies: add control runs tagged vampstudy.control: `codec` "
                          "(encode → decode, one per clip) and `noise` (each condition's mask "
                          "filled with random tokens, per clip and seed) [default: on, unless "
                          "the study class sets controls = False]."),
        click.Option(["--embedding"], multiple=True, metavar="NAME",
                     help="Masking studies: frame embedding for FAD/KAD per condition "
                          "(repeatable): mel (default), codec, vggish, clap, or "
                          "package.module:function."),
        click.Option(["--check"], is_flag=True,
                     help="Run `vampstudy check` on the backend first; stop if a check FAILs."),
    ]


def _execution_options() -> list[click.Option]:
    """Options of `vampstudy run STUDY`: how and where the trials run."""
    return [
        click.Option(["--executor"], type=click.Choice(["process", "pipelined", "sequential", "ray"]),
                     default="process", show_default=True,
                     help="How trials run: process (the model here; measurement, recording "
                          "and the analysis in a second process, which alone opens the "
                          "tracking store), pipelined (one process: the next model call "
                          "overlaps the last trial's measurement and logging), sequential "
                          "(one at a time, for debugging), ray (a pool of Ray workers; "
                          "`pip install vampstudy[ray]`)."),
        click.Option(["--workers"], type=click.IntRange(min=1), default=None, metavar="N",
                     help="--executor ray: worker processes, each loading the backend once "
                          "[default: 2]."),
        click.Option(["--gpus-per-worker"], type=click.FloatRange(min=0), default=None,
                     metavar="G", help="--executor ray: GPUs per worker; a fraction lets "
                                       "workers share a GPU [default: 0]."),
        click.Option(["--address"], default=None, metavar="auto|ray://HOST:PORT",
                     help="--executor ray: join a running Ray cluster [default: start a local "
                          "Ray for this command]."),
        click.Option(["--max-retries"], type=click.IntRange(min=0), default=None, metavar="N",
                     help="--executor ray: retries of a trial whose worker died (killed, out "
                          "of memory) [default: 2]."),
        click.Option(["--max-seconds"], type=click.FloatRange(min=0, min_open=True),
                     default=DEFAULT_MAX_SECONDS, show_default=True, metavar="S",
                     help="Refuse inputs longer than this (read from the file header, before "
                          "decoding): the memory bound."),
        click.Option(["--tracking-patience"], type=click.FloatRange(min=0, min_open=True),
                     default=DEFAULT_PATIENCE, show_default=True, metavar="SECONDS",
                     help="How long the tracking store may not answer (a server restarting, a "
                          "locked sqlite file) before the study stops; meanwhile finished "
                          "trials wait to be recorded and model calls go on."),
        click.Option(["--system-metrics"], is_flag=True,
                     help="Log MLflow's system metrics (CPU, memory, disk, network; GPU when "
                          "nvidia-ml-py is installed) on the study's parent run."),
        click.Option(["--dry-run"], is_flag=True,
                     help="Check every option and input, print the planned conditions and the "
                          "number of runs, and exit without running or logging anything."),
    ]


def _study_command(entry, invoked_name: str) -> click.Command:
    from .options import study_options

    cls = entry.cls
    params = study_options(cls) + _input_options(cls) + _execution_options()
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    help_text = (f"{doc}\n\nSource: {entry.source}.\n\n\b\nExample:\n"
                 f"    vampstudy run {invoked_name} --backend reference")

    @_errors
    def callback(**kwargs):
        with _sigterm_interrupts() as terminated:
            try:
                _run(click.get_current_context(), cls, **kwargs)
            except SystemExit as exc:   # interrupted: 143 (128 + SIGTERM) rather than Ctrl-C's 130
                raise SystemExit(143 if terminated and exc.code == 130 else exc.code) from None

    shared = _options_of(tracking_option) + _options_of(backend_options)
    return _RunCommand(invoked_name, params=params + shared, callback=callback, help=help_text,
                       short_help=cls.description)


class _RunCommand(click.Command):
    """A study's command; keeps its raw arguments (for the ``--resume`` hint)."""

    def parse_args(self, ctx, args):
        ctx.meta["vampstudy.raw_args"] = list(args)
        return super().parse_args(ctx, args)


@contextlib.contextmanager
def _sigterm_interrupts():
    """Within: SIGTERM (``kill``, Slurm's ``scancel`` or time limit) stops a study as Ctrl-C
    does — open runs KILLED, finished ones kept, ``--resume`` continues. Yields a list that
    holds the signal once one arrived; a repeated SIGTERM is ignored while the runs close."""
    received: list[int] = []

    def interrupt(signum, frame):
        if received:
            return
        received.append(signum)
        raise KeyboardInterrupt(f"signal {signum} (SIGTERM)")

    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def _options_of(decorator) -> list[click.Parameter]:
    """The click parameters a shared-option decorator adds, for dynamically built commands."""
    def dummy():
        pass
    return list(reversed(decorator(dummy).__click_params__))


def _parse_seeds(text: str) -> list[int]:
    from .options import ListType

    try:
        return list(ListType(int).convert(text, None, None))
    except click.BadParameter as exc:
        raise click.BadParameter(exc.message, param_hint="--seeds") from exc


def _apply_config(ctx, cls, path, study_kwargs: dict, runner: dict) -> None:
    """Fill parameters left at their defaults from a --config file (the command line wins)."""
    from .options import load_config_file

    values = load_config_file(path)
    unknown = sorted(set(values) - set(study_kwargs) - set(RUNNER_CONFIG_KEYS))
    if unknown:
        raise click.UsageError(f"--config {path}: unknown parameter(s) {unknown}; {cls.name} "
                               f"takes {', '.join(sorted(study_kwargs))} and "
                               f"{', '.join(RUNNER_CONFIG_KEYS)}")
    by_name = {p.name: p for p in ctx.command.params}
    for key, value in values.items():
        if ctx.get_parameter_source(key) not in (ParameterSource.DEFAULT, None):
            continue
        if key == "audio":
            runner["audio"] = tuple(value) if isinstance(value, list) else (str(value),)
        elif key == "seeds":
            runner["seeds"] = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        else:
            try:
                converted = by_name[key].type_cast_value(ctx, value)
            except click.BadParameter as exc:
                raise click.UsageError(f"--config {path}: {key}: {exc.message}") from exc
            (study_kwargs if key in study_kwargs else runner)[key] = converted


def _evidence_options(study, backend, controls: bool | None, embedding: tuple) -> None:
    """Apply --controls/--no-controls and --embedding to a masking study (one line per
    embedding that cannot run here; the study runs with the others)."""
    from .embeddings import DEFAULT_EMBEDDINGS, resolve_embeddings
    from .study import MaskingStudy

    if not isinstance(study, MaskingStudy):
        if embedding:
            raise click.UsageError(f"--embedding applies to masking studies; {study.name} is not one")
        return
    if controls is not None:   # not given: the study class's own default
        study.controls = controls
    usable, notes = resolve_embeddings(embedding or DEFAULT_EMBEDDINGS, backend)
    for note in notes:
        click.echo(f"warning: {note}", err=True)
    study.embeddings = tuple(usable)


def _evidence_config(study) -> dict:
    """--controls and --embedding as config.yaml keys (masking studies only)."""
    from .study import MaskingStudy

    if not isinstance(study, MaskingStudy):
        return {}
    return {"controls": bool(study.controls), "embedding": list(study.embeddings)}


def _seed_list(seed: int, seeds: str | None, repeats: int | None) -> list[int]:
    """--seed, --seeds or --repeats as the list of seeds every condition runs with."""
    if seeds and repeats:
        raise click.UsageError("give --seeds or --repeats, not both")
    return _parse_seeds(seeds) if seeds else list(range(repeats)) if repeats else [seed]


def _enable_visqol(study) -> None:
    """--visqol: a masking study, and the optional package installed."""
    import importlib.util

    from .study import MaskingStudy

    if not isinstance(study, MaskingStudy):
        raise click.UsageError(f"--visqol applies to masking studies; {study.name} is not one")
    if importlib.util.find_spec("visqol") is None:
        raise click.ClickException("--visqol needs the visqol-python package: "
                                   "pip install visqol-python")
    study.visqol = True


def _check_before_study(b, tracker, audio) -> None:
    """--check: run `vampstudy check` on the backend; a FAIL stops before any run exists."""
    status, _ = _check(b, tracker, audio[:1], log=True, as_json=False)
    if status == "FAIL":
        raise click.ClickException(
            f"backend {b.name} failed `vampstudy check` (table above); the study was not "
            "run. Fix the backend, or run without --check to proceed anyway")


def _run(ctx, cls, *, tracking_uri, backend, device, audio, seed, seeds, repeats, experiment,
         resume, config, check, visqol, max_seconds, dry_run, executor, tracking_patience,
         controls, embedding, system_metrics=False, **rest):
    from .study import Study

    ckpts = {k: rest.pop(k) for k in VAMPNET_ONLY}
    executor_opts = {k: rest.pop(k) for k in EXECUTOR_OPTIONS if k in rest}
    study_kwargs = rest
    runner = {"audio": audio, "seed": seed, "seeds": seeds, "backend": backend, "device": device,
              "experiment": experiment, "controls": controls, "embedding": embedding}
    if config:
        _apply_config(ctx, cls, config, study_kwargs, runner)
    audio, seed, seeds = runner["audio"], runner["seed"], runner["seeds"]
    backend, device, experiment = runner["backend"], runner["device"], runner["experiment"]
    controls, embedding = runner["controls"], tuple(runner["embedding"] or ())
    if experiment is not None:  # (also from --config)
        _experiment_name(ctx, None, experiment)
    seed_list = _seed_list(seed, seeds, repeats)
    study: Study = cls(**study_kwargs)
    if visqol:
        _enable_visqol(study)
    # before the backend loads: --executor process starts its measuring process now
    ex = None if dry_run else _make_executor(executor, executor_opts)
    try:
        _run_study_cli(ctx, cls, study, ex, ckpts, tracking_uri=tracking_uri, backend=backend,
                       device=device, audio=audio, seed_list=seed_list, experiment=experiment,
                       resume=resume, check=check, max_seconds=max_seconds, dry_run=dry_run,
                       tracking_patience=tracking_patience, controls=controls,
                       embedding=embedding, system_metrics=system_metrics)
    finally:
        if ex is not None:
            ex.close()


def _run_study_cli(ctx, cls, study, ex, ckpts, *, tracking_uri, backend, device, audio,
                   seed_list, experiment, resume, check, max_seconds, dry_run,
                   tracking_patience, controls, embedding, system_metrics):
    """The rest of ``vampstudy run STUDY``: backend, checks, the study, its report."""
    from .runner import run_study

    b = make_backend(backend, device, **ckpts)
    _evidence_options(study, b, controls, embedding)
    # everything that can be checked before a run exists: the study's values, then the inputs
    study.validate(b)
    inputs = _check_inputs(audio, max_seconds)
    if dry_run:
        _print_plan(study, inputs, seed_list, experiment or cls.name)
        return
    tracker, uri, check_status = _tracking_for(ex, tracking_uri, check, b, audio)
    click.echo(f"study: {cls.name} · tracking: {uri}", err=True)

    run = functools.partial(
        run_study, study, b, tracker, audio=audio, seeds=seed_list, experiment=experiment,
        resume=resume, check_status=check_status,
        executor=ex,
        max_seconds=max_seconds, tracking_patience=tracking_patience, notify=_notify,
        system_metrics=system_metrics,
        backend_spec=(b.name if backend == "auto" else backend,
                      {"device": device, **{k: v for k, v in ckpts.items() if v}}),
        resolved_config={**study.get_params(), "backend": b.name, "device": device,
                         "audio": list(audio), "seeds": seed_list, **_evidence_config(study)})
    result, failure = _run_with_progress(ctx, run)
    _report(tracker, uri, result)
    if failure is not None:
        raise click.ClickException(str(failure))


def _tracking_for(ex, tracking_uri, check: bool, b, audio):
    """``(tracker, uri, check status)`` of a study: with an executor whose measuring
    process opens the store (``process``), ``tracker`` is just the checked URI and the last
    check is looked up there, so that this process (the model's) never imports MLflow;
    ``--check`` runs the checks here first, on a store opened here."""
    if getattr(ex, "hosts_tracking", False) and not check:
        from .runner import LOOK_UP_CHECK
        from .stores import check_tracking_uri, resolve_tracking_uri

        uri = check_tracking_uri(resolve_tracking_uri(tracking_uri))
        return uri, uri, LOOK_UP_CHECK
    from .tracking import Tracker

    tracker = Tracker(tracking_uri)
    if check:
        _check_before_study(b, tracker, audio)
    return tracker, tracker.uri, tracker.last_check(b.name)


def _run_with_progress(ctx, run):
    """Call ``run(progress=...)`` under a progress bar: (result, the StudyFailed or None).

    Ctrl-C (or SIGTERM) exits 130 with the ``--resume`` hint; a tracking store that stayed
    away past --tracking-patience is one error line with the same hint.
    """
    from .runner import StudyFailed, StudyInterrupted, TrackingLost

    with click.progressbar(length=1, label="conditions", file=sys.stderr, show_pos=True,
                           item_show_func=lambda s: s) as bar:
        def progress(trial, status, i, total):
            bar.length = total
            bar.label = "conditions"
            bar.update(1, f"{trial.condition.name} {status}")

        try:
            return run(progress=progress), None
        except StudyFailed as exc:
            return exc.result, exc
        except StudyInterrupted as exc:
            bar.render_finish()
            click.echo(f"\n{exc}.\nContinue it with:  {_resume_command(ctx)}", err=True)
            sys.exit(130)
        except TrackingLost as exc:
            raise click.ClickException(f"{exc.what}; once the store is back, continue with:  "
                                       f"{_resume_command(ctx)}") from exc


def _notify(message: str) -> None:
    """A line of the study's own on the terminal (below a progress bar that is drawn)."""
    click.echo(("\n" if sys.stderr.isatty() else "") + message, err=True)


#: Options of the executors other than --executor itself (added by executors' own option sets).
EXECUTOR_OPTIONS = ("workers", "gpus_per_worker", "address", "max_retries")


def _make_executor(name: str, options: dict):
    from .executors import make_executor

    given = {k: v for k, v in options.items() if v is not None}
    if given and name != "ray":
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise click.UsageError(f"{flags} only apply to --executor ray (executor is {name})")
    return make_executor(name, **given)


def _resume_command(ctx) -> str:
    """The ``vampstudy run`` command line that was given, with ``--resume`` (to continue an
    interrupted study); the arguments are the ones click parsed (see :class:`_RunCommand`)."""
    import shlex

    path, c = [], ctx   # the subcommands' names, not the program's ("python -m …", "main")
    while c.parent is not None:
        path.insert(0, c.info_name)
        c = c.parent
    args = [a for a in ctx.meta.get("vampstudy.raw_args", []) if a != "--resume"]
    return " ".join(["vampstudy", *(shlex.quote(a) for a in [*path, *args, "--resume"])])


def _check_inputs(audio, max_seconds):
    """Expand and check every input from its header; say which folder entries were skipped."""
    from .audio import check_inputs

    skipped: list = []
    try:
        return check_inputs(audio, max_seconds, skipped=skipped)
    finally:  # also when a file is refused: say what was left out
        for path, why in skipped:
            click.echo(f"skipped {path}: {why}", err=True)


def _print_plan(study, inputs, seeds, experiment) -> None:
    """--dry-run: the conditions, the clips and the number of runs; nothing is logged."""
    conditions = study.iterate()
    controls = study.control_conditions(conditions)
    click.echo(f"study {study.name} → experiment {experiment!r}: {len(conditions)} conditions")
    for c in conditions:
        click.echo(f"  {c.name}")
    if controls:
        click.echo(f"controls ({len(controls)}; --no-controls to leave them out):")
        for c in controls:
            click.echo(f"  {c.name}")
    click.echo(f"clips ({len(inputs)}):")
    for info in inputs:
        click.echo(f"  {info.path}  {info.duration_s:.2f} s, {info.sample_rate} Hz, "
                   f"{info.channels} ch")
    total = len(inputs) * len(conditions) * len(seeds)
    n_controls = len(inputs) * sum(1 if c.control == "codec" else len(seeds) for c in controls)
    more = f" + {n_controls} control runs" if n_controls else ""
    click.echo(f"{len(inputs)} clips × {len(conditions)} conditions × {len(seeds)} seeds "
               f"= {total} runs{more} (plus one parent run). Dry run: nothing was run or logged.")


def _report(tracker, uri: str, result) -> None:
    """The summary table, the counts and how to open the results; read from
    ``result.report`` when the store was open in the measuring process only (``tracker``
    is then just its URI), else from ``tracker``."""
    from .report import compact_columns, format_table, legend
    from .sharedviews import ui_url

    rows, key = _report_facts(tracker, result)
    if rows:
        table = format_table(compact_columns(rows), max_width=120, drop_empty=True)
        click.echo(table)
        shown = [{k: None for k in table.splitlines()[0].split()}]
        names = legend(rows, shown)
        if names:
            click.echo(names)
    extra = f", {result.skipped} reused from the resumed run" if result.resumed else ""
    n_controls = sum(1 for o in result.outcomes if o.trial.condition.control)
    controls = f" (+ {n_controls} control runs)" if n_controls else ""
    click.echo(f"\n{len(result.outcomes) - n_controls} conditions finished{controls}, "
               f"{len(result.failed)} failed{extra} "
               f"in {result.seconds:.1f} s. Parent run: {result.parent_run_id}")
    uri_opt = "" if uri == _default_uri() else f" --tracking-uri '{uri}'"
    make_ui = " (or: make ui)" if not uri_opt and _has_make_ui() else ""
    click.echo(f"Open the results:  {_self_command()} ui{uri_opt}{make_ui}\n"
               f"  then browse {ui_url(result.experiment_id, view_key=key)}")
    if key:
        click.echo(f"  charts: {ui_url(result.experiment_id, view_key=key, charts=True)}")


def _report_facts(tracker, result) -> tuple[list, str | None]:
    """``(summary rows, saved view key or None)`` for :func:`_report`."""
    if "summary" in result.report:
        return result.report["summary"], result.report.get("view_key")
    from .views import view_key

    try:
        rows = tracker.load_table(result.parent_run_id, "summary")
    except Exception:
        rows = []
    key = view_key(result.parent_run_id)
    try:
        key = key if tracker.load_view(result.experiment_id, key) is not None else None
    except Exception:
        key = None
    return rows, key


def _self_command() -> str:
    """How to call vampstudy again from this shell: ``vampstudy`` when that is what runs,
    else the path it was started by (e.g. ``.venv/bin/vampstudy`` after ``make demo``)."""
    import os
    import shlex
    import shutil

    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) != "vampstudy":
        return "vampstudy"
    found = shutil.which("vampstudy")
    if found and os.path.realpath(found) == os.path.realpath(argv0):
        return "vampstudy"
    return shlex.quote(argv0 if os.path.dirname(argv0) else os.path.abspath(argv0))


def _has_make_ui() -> bool:
    """True when the current folder's Makefile has a ``ui`` target (vampstudy's own does)."""
    from pathlib import Path

    try:
        return "\nui:" in "\n" + Path("Makefile").read_text()
    except OSError:
        return False


def _default_uri() -> str:
    from .stores import default_store

    return default_store()[0]


main.add_command(StudyGroup("run", help="Run a study: `vampstudy run NAME [OPTIONS]`.\n\n"
                                        "NAME is a registered study (see `vampstudy list`) or "
                                        "path/to/file.py:ClassName.\n\n\b\nExample:\n"
                                        "    vampstudy run periodic --intervals 2,7,30 --seed 1"))


# ---------------------------------------------------------------- check
def _check(backend, tracker, audio, log: bool, as_json: bool):
    import json

    from .checks import format_check_table, overall_status, run_checks
    from .runner import prepare_clips

    from .schedule_checks import schedule_figure, schedule_lines

    clips = prepare_clips(backend, list(audio)) if audio else _short_demo(backend)
    rows = run_checks(backend, clips[0])
    status = overall_status(rows)
    run_id = None
    if log and tracker is not None:
        figure = schedule_figure(rows, backend.name)
        run_id = tracker.log_check(backend, [r.to_dict(with_trace=False) for r in rows], status,
                                   clips[0].identity,
                                   figures={"figures/sampling_schedule.png": figure} if figure else None)
        traces = {k: v for r in rows for k, v in (r.trace or {}).items()}
        if traces:
            tracker.log_text(run_id, json.dumps(traces), "sampling_trace.json")
    if as_json:
        click.echo(json.dumps({"backend": backend.name, "description": backend.description,
                               "status": status, "mlflow_run_id": run_id,
                               "clip": clips[0].identity,
                               "checks": [r.to_dict() for r in rows]}, indent=2))
    else:
        click.echo(f"vampstudy check · backend {backend.name} · clip {clips[0].name} "
                   f"({clips[0].identity['duration_s']:.1f} s)")
        click.echo(format_check_table(rows))
        lines = schedule_lines(rows)
        if lines:
            click.echo("\n" + "\n".join(lines))
        click.echo(f"\noverall: {status}" + (f" (logged as MLflow run {run_id})" if run_id else ""))
    return status, rows


def _short_demo(backend):
    from .audio import demo_clip
    from .runner import prepare_clips

    clip = demo_clip(duration=5.0)
    return prepare_clips(backend, [], clips=[clip])


@main.command()
@backend_options
@click.option("--audio", default=None, metavar="PATH",
              help="Clip to check with. Default: 5 s of the built-in demo clip.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (see README).")
@click.option("--log/--no-log", default=False, show_default=True,
              help="Also record the battery as an MLflow run tagged as a check.")
@tracking_option
@_errors
def check(backend, device, audio, as_json, log, tracking_uri, **ckpts):
    """Check that a backend honours the masking contract (exit 1 if any check FAILs).

    Prompts kept, masked tokens regenerated, seed determinism, every sampling
    option having an effect, build_mask semantics, batched vs single calls, and
    the codec round trip.

    \b
    Example:
        vampstudy check --backend reference
        vampstudy check --backend vampnet --json --log
    """
    from .tracking import Tracker

    b = make_backend(backend, device, **ckpts)
    tracker = Tracker(tracking_uri) if log else None
    status, _ = _check(b, tracker, (audio,) if audio else (), log, as_json)
    if status == "FAIL":
        sys.exit(1)


# ----------------------------------------------------------------- list
@main.command("list")
@_errors
def list_cmd():
    """List the available studies, their descriptions and where they come from.

    \b
    Example:
        vampstudy list
    """
    from .registry import registered

    for name, entries in sorted(registered().items()):
        clash = "  ** NAME CLASH **" if len(entries) > 1 else ""
        for e in entries:
            click.echo(f"{name:<18} {e.description}")
            click.echo(f"{'':<18}   from {e.source}{clash}")


# ------------------------------------------------------------------- ui
@main.command()
@tracking_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--experiment", default=None, help="Experiment whose runs URL to print.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Server worker processes (more for a UI shared by many people).")
@click.pass_context
@_errors
def ui(ctx, tracking_uri, host, port, experiment, workers):
    """Start the MLflow UI on the same store (loopback by default) and print its URL.

    The server's own messages go to a log file it names (to the terminal with -v); the
    last line printed is the URL to open. The server runs in its own process group;
    Ctrl-C or SIGTERM stops all of it. Exit code: 130 after Ctrl-C, 143 after SIGTERM,
    1 if the port is busy or the server never served, else the server's own.

    \b
    Example:
        vampstudy ui --port 5001
    """
    from .serve import check_port, run_server
    from .tracking import Tracker, ui_command

    tracker = Tracker(tracking_uri)
    exp_id = tracker.experiment_id(experiment, create=False) if experiment else None
    if exp_id is None:
        exp_id = tracker.latest_study_experiment()
    check_port(host, port)
    verbose = ctx.find_root().params.get("verbose", 0)
    log_path = None if verbose else _ui_log_path(port)
    where = f"; its log: {log_path}" if log_path else ""
    click.echo(f"starting the MLflow UI for {tracker.uri} on {host}:{port}{where} …", err=True)

    def ready():
        url = tracker.ui_url(exp_id, host, port, view_key=tracker.latest_view(exp_id))
        click.echo(f"MLflow UI for {tracker.uri}: runs table with nested runs; Ctrl-C to stop.\n"
                   f"ready — open {url}")

    cmd = ui_command(tracker, host, port) + ["--workers", str(workers)]
    sys.exit(run_server(cmd, host, port, ready, log_path=log_path))


def _ui_log_path(port: int) -> str:
    """Where `vampstudy ui` writes the server's messages: the temp folder, by port."""
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"vampstudy-ui-{port}.log")


# --------------------------------------------------------------- listen
@main.command()
@click.argument("run_id", required=False, default="latest")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(1, 65535))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; any other than loopback prints an access token.")
@click.option("--design", default="mushra", show_default=True,
              type=click.Choice(["mushra", "mushra-noref", "ab"]),
              help="MUSHRA (BS.1534-3), MUSHRA without reference (BS.2132) or A/B preference.")
@click.option("--state-dir", default=None, type=click.Path(file_okay=False),
              help="Folder of the test (stimuli, journal). Default: beside the store.")
@click.option("--analyse", "analyse_only", is_flag=True,
              help="Record screening, statistics and metrics of the ratings so far; no server.")
@tracking_option
@_errors
def listen(run_id, port, host, design, state_dir, analyse_only, tracking_uri):
    """Serve a blinded listening test (MUSHRA) of a finished study and print its URL.

    Ratings land on the study's runs: listening/* artifacts on the parent,
    listen_mean/listen_ci95/listen_n on each condition's runs. Ctrl-C stops.

    \b
    Example:
        vampstudy listen                  # latest study, http://127.0.0.1:8765/
        vampstudy listen 3f2a9c... --design mushra-noref
    """
    from .listen.server import listen as listen_test
    from .tracking import Tracker

    tracker = Tracker(tracking_uri)
    parent = tracker.resolve_study_run(run_id).info.run_id

    def ready(url):
        click.echo(f"listening test ({design}) of run {parent}\n  open {url}\n"
                   "  (give each rater their own Rater ID; Ctrl-C to stop)")
        sys.stdout.flush()

    listen_test(tracker, parent, design, host, port, state_dir, analyse_only, ready)
    if analyse_only:
        click.echo(f"analysis recorded on run {parent} (listening/summary.json)")


# ----------------------------------------------------------------- show
@main.command()
@click.argument("run_id", required=False, default="latest")
@click.option("--wide", is_flag=True, help="Every column (std, CI, every metric).")
@tracking_option
@_errors
def show(run_id, wide, tracking_uri):
    """Print the summary table of a study run (default: the latest one).

    \b
    Example:
        vampstudy show            # latest study run
        vampstudy show 3f2a9c...  # a given parent run id
    """
    from .report import compact_columns, format_table
    from .tracking import Tracker

    tracker = Tracker(tracking_uri)
    run = tracker.resolve_study_run(run_id)
    info = run.info
    click.echo(f"{info.run_name}  [{info.status}]  run {info.run_id}")
    click.echo(f"backend: {run.data.params.get('backend', '?')} — "
               f"{run.data.params.get('backend_description', '')}")
    from .phases import phase_summary

    phases = phase_summary(run.data.metrics)
    if phases:
        click.echo(phases)
    if info.status != "FINISHED":
        from .record import study_state

        children = tracker.find_runs(info.experiment_id, {"mlflow.parentRunId": info.run_id},
                                     ("FINISHED",))
        for line in study_state(run, len(children)):
            click.echo(line)
    try:
        rows = tracker.load_table(info.run_id, "summary")
    except Exception as exc:
        if info.status != "FINISHED":
            return  # said above what happened and how to continue
        raise click.ClickException(f"run {info.run_id} has no summary table "
                                   f"(status {info.status})") from exc
    click.echo(format_table(rows if wide else compact_columns(rows), drop_empty=True))
    _show_listening(tracker, info.run_id)
    for table, title in COMPARISON_TABLES:
        try:
            rows = tracker.load_table(info.run_id, table)
        except Exception:   # a study without that table (e.g. one condition, --no-controls)
            continue
        click.echo(f"\n{title}:")
        click.echo(format_table(rows, drop_empty=True))



def _show_listening(tracker, run_id: str) -> None:
    """The listening-test table of a study run, when one was analysed."""
    from .listen.results import load_summary, summary_rows, test_lines
    from .report import format_table

    summary = load_summary(tracker, run_id)
    if summary:
        click.echo(f"\nlistening test ({summary['design']}, {summary['n_raters_after']} of "
                   f"{summary['n_raters_before']} raters after screening), score 0-100:")
        click.echo(format_table(summary_rows(summary)))
        for line in test_lines(summary):
            click.echo(line)


if __name__ == "__main__":  # pragma: no cover
    main()
