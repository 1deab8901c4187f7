"""The listening report: one self-contained HTML page for a study's parent run.

For each clip: the original, then every condition in the study's order, with
an audio player and a spectrogram for **every seed**, the mask, and each
metric as mean ± 95 % CI over the seeds next to the per-seed values. Audio is
embedded as Ogg Vorbis (WAV where Vorbis is unavailable) and images as PNG,
both base64, so the page plays in MLflow's artifact viewer (a sandboxed
iframe, no scripts) or any browser with no server. The layout is fluid: it
fits MLflow's narrow artifact pane and a full window.

Every player is loudness-matched to one target (:func:`vampstudy.levels.matching_target`:
-24 LUFS, lower if a stimulus would otherwise exceed full scale) with its gain
shown beside it, so that louder never sounds better.

What the page embeds is bounded: each audio preview is at most
:data:`PREVIEW_SECONDS` long, shorter when a study has many outputs (all
previews together stay under :data:`AUDIO_BUDGET_SECONDS`); the full-length
audio is each run's ``audio/*.wav`` artifact, which the page names.
Compressed previews are written in blocks of :data:`BLOCK_FRAMES` frames:
one large Vorbis write can overflow libvorbis' stack and kill the process
(python-soundfile #396/#426, libsndfile #1095).
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import logging
from typing import Callable

import numpy as np
import torch

from . import levels, plots
from .spool import SpooledFile
from .summary import STANDARD_METRICS, mean_ci

logger = logging.getLogger(__name__)

#: Longest audio preview embedded per player (seconds).
PREVIEW_SECONDS = 30.0
#: Shortest preview the budget may shrink a player to (seconds).
MIN_PREVIEW_SECONDS = 5.0
#: Total seconds of audio one page embeds (previews shrink to stay below it).
AUDIO_BUDGET_SECONDS = 600.0
#: Frames per write when encoding a compressed preview.
BLOCK_FRAMES = 65536


def encode_audio(data: np.ndarray, sample_rate: int, fmt: str = "OGG") -> bytes:
    """Encode ``data`` (frames × channels, float in [-1, 1]) to bytes, writing in blocks.

    ``fmt`` is ``"OGG"`` (Vorbis) or ``"WAV"`` (16-bit PCM). Writing in
    blocks of :data:`BLOCK_FRAMES` keeps each call into libvorbis small.
    """
    import soundfile as sf

    data = np.ascontiguousarray(np.clip(np.asarray(data, dtype=np.float32), -1.0, 1.0))
    if data.ndim == 1:
        data = data[:, None]
    subtype = "VORBIS" if fmt == "OGG" else "PCM_16"
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=int(sample_rate), channels=data.shape[1],
                      format=fmt, subtype=subtype) as f:
        for start in range(0, len(data), BLOCK_FRAMES):
            f.write(data[start:start + BLOCK_FRAMES])
    return buf.getvalue()


def audio_data_uri(signal, max_seconds: float | None = PREVIEW_SECONDS) -> str:
    """Batch item 0 of a signal, cut to ``max_seconds``, as a ``data:`` URI
    (Ogg Vorbis, else 16-bit WAV)."""
    sr = int(signal.sample_rate)
    data = signal.audio_data[0].detach().cpu().float().numpy().T
    if max_seconds is not None:
        data = data[:int(round(max_seconds * sr))]
    try:
        payload, mime = encode_audio(data, sr, "OGG"), "audio/ogg"
    except Exception:  # libsndfile without Vorbis
        payload, mime = encode_audio(data, sr, "WAV"), "audio/wav"
    return f"data:{mime};base64,{base64.b64encode(payload).decode()}"


def figure_data_uri(fig, dpi: int = 60) -> str:
    """A figure as a PNG ``data:`` URI: a matplotlib figure drawn at ``dpi``, or a
    :class:`vampstudy.plots.RenderedFigure` (already drawn) as it is."""
    if isinstance(fig, plots.RenderedFigure):
        png = fig.png
    else:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        png = buf.getvalue()
    return f"data:image/png;base64,{base64.b64encode(png).decode()}"


def _drawn(outcome, name: str):
    """The outcome's figure ``name`` if the recorder kept it already drawn, else None."""
    fig = outcome.figures.get(name)
    return fig if isinstance(fig, plots.RenderedFigure) else None


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _duration(signal) -> float:
    return signal.audio_data.shape[-1] / float(signal.sample_rate)


def group_outcomes(outcomes, clip) -> list[list]:
    """Outcomes of one clip that carry audio, grouped by condition (first-seen
    order), each group sorted by seed."""
    groups: dict[str, list] = {}
    for o in outcomes:
        if o.trial.clip.identity["sha256"] != clip.identity["sha256"] or "output" not in o.audio:
            continue
        groups.setdefault(o.trial.condition.key, []).append(o)
    return [sorted(g, key=lambda o: o.trial.seed) for g in groups.values()]


def preview_seconds(n_players: int) -> float:
    """The per-player preview length that keeps a page within the audio budget."""
    if n_players <= 0:
        return PREVIEW_SECONDS
    return max(MIN_PREVIEW_SECONDS, min(PREVIEW_SECONDS, AUDIO_BUDGET_SECONDS / n_players))


class _Page:
    """Builds the sections; caches what is encoded once (each clip's original).

    Every player is loudness-matched to ``target`` LUFS (:func:`vampstudy.levels.match_loudness`)
    and shows its gain, so that no stimulus sounds better for being louder.
    """

    def __init__(self, label: str, cap: float, target: float = levels.TARGET_LUFS):
        self.label, self.cap, self.target = label, cap, target
        self._audio: dict[object, tuple[str, float, float]] = {}

    def player(self, signal, artifact: str, key=None) -> str:
        """An audio player; encoded once per ``key`` when one is given (an original clip).

        Outputs pass no key: each is read back from the store, used and freed, and a
        freed signal's ``id`` can be reused by the next one.
        """
        cached = self._audio.get(key) if key is not None else None
        if cached is None:
            matched, gain_db = levels.match_loudness(signal, self.target)
            cached = (audio_data_uri(matched, self.cap), gain_db, levels.peak(matched))
            if key is not None:
                self._audio[key] = cached
        uri, gain_db, matched_peak = cached
        total = _duration(signal)
        note = ""
        if total > self.cap + 1e-6:
            note = (f"<div class='note'>first {self.cap:.0f} s of {total:.1f} s — full audio: "
                    f"artifact <code>{html.escape(artifact)}</code></div>")
        clips = (f"; this preview clips (peak {matched_peak:.2f} after the gain)"
                 if matched_peak > levels.FULL_SCALE else "")
        gain = (f"<div class='gain' data-gain-db='{gain_db:.2f}'>gain {gain_db:+.1f} dB → "
                f"{self.target:.1f} LUFS{clips}</div>")
        return (f"<audio controls preload='metadata' src='{uri}' "
                f"data-gain-db='{gain_db:.2f}'></audio>{gain}{note}")

    def spectrogram(self, signal, title: str, drawn=None) -> str:
        fig = drawn or plots.spectrogram_figure(signal, title, self.label)
        return f"<img class='spec' src='{figure_data_uri(fig)}' alt='spectrogram {html.escape(title)}'>"

    def mask(self, mask, title: str, drawn=None) -> str:
        fig = drawn or plots.mask_figure(torch.as_tensor(mask), title, self.label)
        return f"<img class='mask' src='{figure_data_uri(fig)}' alt='mask'>"


def _metric_names(outcomes) -> list[str]:
    seen = list(dict.fromkeys(m for o in outcomes for m in o.metrics if "_cb" not in m))
    return [m for m in STANDARD_METRICS if m in seen] + [m for m in seen if m not in STANDARD_METRICS]


def _metrics_table(group, names) -> str:
    seeds = [o.trial.seed for o in group]
    repeated = len(group) > 1
    head = "<tr><th>metric</th>" + ("<th>mean ± 95% CI</th>" if repeated else "")
    head += "".join(f"<th>seed {s}</th>" for s in seeds) + "</tr>"
    rows = []
    for m in names:
        values = [o.metrics.get(m) for o in group]
        if all(v is None for v in values):
            continue
        cells = ""
        if repeated:
            st = mean_ci([v for v in values if v is not None])
            ci = f" ± {_fmt(st['ci95'])}" if st["ci95"] is not None else ""
            cells += f"<td>{_fmt(st['mean'])}{ci} <small>(n={st['n']})</small></td>"
        cells += "".join(f"<td>{_fmt(v)}</td>" for v in values)
        rows.append(f"<tr><td>{html.escape(m)}</td>{cells}</tr>")
    return f"<div class='scroll'><table class='metrics'>{head}{''.join(rows)}</table></div>"


def _condition_card(page: _Page, group, names) -> str:
    name = group[0].trial.condition.name
    media = []
    first_mask = group[0].arrays.get("mask")
    if first_mask is not None:
        media.append(f"<figure>{page.mask(first_mask, '', _drawn(group[0], 'mask'))}"
                     f"<figcaption>mask (black = generate)</figcaption></figure>")
    for o in group:
        title = f"{name} · seed {o.trial.seed}"
        extra = ""
        mask = o.arrays.get("mask")
        if o is not group[0] and mask is not None and first_mask is not None \
                and not np.array_equal(mask, first_mask):
            extra = page.mask(mask, "", _drawn(o, "mask"))
        output = o.audio["output"]   # read back from the store: one output at a time
        media.append(f"<figure><figcaption>seed {o.trial.seed}</figcaption>"
                     f"{page.player(output, 'audio/output.wav of this condition’s run')}"
                     f"{page.spectrogram(output, title, _drawn(o, 'spectrogram'))}"
                     f"{extra}</figure>")
        del output
    return (f"<section class='card'><h3>{html.escape(name)}</h3>{_metrics_table(group, names)}"
            f"<div class='media'>{''.join(media)}</div></section>")


def listening_report(outcomes, session, title: str) -> str:
    """The HTML page as one string: every condition and seed of every clip.

    For a few outcomes (a test, a small study); a study's analysis uses
    :func:`listening_report_file`, which never holds the whole page.
    """
    parts: list[str] = []
    write_listening_report(outcomes, session, title, parts.append)
    return "".join(parts)


def listening_report_file(outcomes, session, title: str) -> SpooledFile:
    """The HTML page written card by card to a :class:`vampstudy.spool.SpooledFile`
    (what :attr:`vampstudy.study.Record.files` takes as ``report.html``)."""
    out = SpooledFile()
    write_listening_report(outcomes, session, title, out.write)
    return out


def write_listening_report(outcomes, session, title: str, write: Callable[[str], None]) -> None:
    """Write the page to ``write`` in pieces: the head, then each clip's original and each
    condition's card as soon as it is built. At most one card (one condition's seeds) and
    one decoded output are held at a time, so memory does not grow with the trials."""
    backend = session.backend
    label = plots.backend_label(backend)
    warning = "" if backend.is_vampnet else (
        f"<p class='warn'>Generated with the <b>{html.escape(backend.name)}</b> backend — "
        f"{html.escape(backend.description)}. These are not VampNet's outputs.</p>")
    per_clip = [(clip, group_outcomes(outcomes, clip)) for clip in session.clips]
    n_players = sum(1 + sum(len(g) for g in groups) for _, groups in per_clip)
    # a generator: each output is read, measured and freed before the next
    stimuli = itertools.chain((clip.signal for clip, _ in per_clip),
                              (o.audio["output"] for _, groups in per_clip for g in groups
                               for o in g))
    page = _Page(label, preview_seconds(n_players), levels.matching_target(stimuli))
    names = _metric_names(outcomes)
    seeds = sorted({o.trial.seed for o in outcomes}) or list(session.seeds)
    write(_head(title, label, page, seeds, len(session.clips), warning))
    for index, (clip, groups) in enumerate(per_clip):
        suffix = "" if len(session.clips) == 1 else f"_{clip.name}"
        player = page.player(clip.signal, f"audio/original{suffix}.wav of the study run",
                             key=("original", index))
        write(f"<h2>{html.escape(clip.name)} <small>{html.escape(clip.identity['path'])}"
              f"</small></h2>\n<section class='card'><h3>original</h3><div class='media'><figure>"
              f"{player}"
              f"{page.spectrogram(clip.signal, 'original')}</figure></div></section>\n")
        for g in groups:
            write(_condition_card(page, g, names))
    write("\n</body></html>\n")


def _head(title: str, label: str, page: _Page, seeds: list, n_clips: int, warning: str) -> str:
    """The page from its doctype to the introduction (style, title, notes)."""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
*, *::before, *::after {{ box-sizing: border-box; }}
body {{ font-family: system-ui, sans-serif; margin: 0; padding: 12px; color: #222;
        max-width: 1400px; overflow-wrap: anywhere; }}
h1 {{ font-size: 1.3em; }} h2 {{ font-size: 1.15em; margin-top: 1.5em; }}
h3 {{ font-size: 1em; margin: 0 0 6px; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: 8px; margin: 8px 0; }}
.media {{ display: flex; flex-wrap: wrap; gap: 10px; }}
figure {{ margin: 0; flex: 1 1 280px; min-width: 0; max-width: 440px; }}
figcaption {{ font-size: 12px; color: #555; }}
img {{ display: block; width: 100%; height: auto; }}
audio {{ display: block; width: 100%; }}
.scroll {{ max-width: 100%; overflow-x: auto; }}
table.metrics {{ border-collapse: collapse; font-size: 12px; font-family: monospace; }}
table.metrics td, table.metrics th {{ border-bottom: 1px solid #eee; padding: 2px 8px 2px 0;
        text-align: right; white-space: nowrap; }}
table.metrics td:first-child, table.metrics th:first-child {{ text-align: left; }}
.note, .gain {{ font-size: 11px; color: #666; }}
.warn {{ background: #fff3cd; border: 1px solid #e0c060; padding: .6em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(label)} · {n_clips} clip(s) · seeds {html.escape(str(seeds))} ·
audio previews up to {page.cap:.0f} s</p>
<p class='note'>Every player is loudness-matched to {page.target:.1f} LUFS (ITU-R BS.1770), the
gain it needed shown under it, so that louder does not sound better; each run's
<code>audio/*.wav</code> holds the signal at the level it was measured.</p>
{warning}
"""
