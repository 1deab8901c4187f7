"""The listening report: one self-contained HTML page for a study's parent run.

For each clip: the original and every condition side by side — an audio
player, the mask, the spectrogram and the key metrics — sorted as the study
ordered its conditions and labelled with the backend. Audio is embedded as
Ogg Vorbis (WAV where Vorbis is unavailable) and images as PNG, both base64,
so the page plays in MLflow's artifact viewer or any browser with no server.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import torch

from . import plots
from .summary import STANDARD_METRICS


def audio_data_uri(signal) -> str:
    """Batch item 0 of a signal as a ``data:`` URI (Ogg Vorbis, else 16-bit WAV)."""
    import soundfile as sf

    data = np.clip(signal.audio_data[0].detach().cpu().numpy().T, -1.0, 1.0)
    buf = io.BytesIO()
    try:
        sf.write(buf, data, int(signal.sample_rate), format="OGG", subtype="VORBIS")
        mime = "audio/ogg"
    except Exception:  # libsndfile without Vorbis
        buf = io.BytesIO()
        sf.write(buf, data, int(signal.sample_rate), format="WAV", subtype="PCM_16")
        mime = "audio/wav"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode()}"


def figure_data_uri(fig, dpi: int = 60) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def listening_report(outcomes, session, title: str) -> str:
    """The HTML page (a string) for the first seed of every condition on every clip."""
    backend = session.backend
    label = plots.backend_label(backend)
    warning = "" if backend.is_vampnet else (
        f"<p class='warn'>Generated with the <b>{html.escape(backend.name)}</b> backend — "
        f"{html.escape(backend.description)}. These are not VampNet's outputs.</p>")
    sections = []
    for clip in session.clips:
        seen, rows = set(), []
        for o in outcomes:
            if o.trial.clip.identity["sha256"] != clip.identity["sha256"]:
                continue
            if o.trial.condition.key in seen or "output" not in o.audio:
                continue
            seen.add(o.trial.condition.key)
            rows.append(o)
        cells = [_row("original", clip.signal, None, {}, label)]
        cells += [_row(o.trial.condition.name + (f" · seed {o.trial.seed}"
                                                  if len(session.seeds) > 1 else ""),
                       o.audio["output"], o.arrays.get("mask"), o.metrics, label) for o in rows]
        sections.append(f"<h2>{html.escape(clip.name)} <small>{html.escape(clip.identity['path'])}"
                        f"</small></h2>\n<table>\n<tr><th>condition</th><th>audio</th><th>mask</th>"
                        f"<th>spectrogram</th><th>metrics</th></tr>\n" + "\n".join(cells) + "\n</table>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border-bottom: 1px solid #ddd; padding: 6px;
vertical-align: middle; text-align: left; }} img {{ display: block; }}
.warn {{ background: #fff3cd; border: 1px solid #e0c060; padding: .6em; }}
.metrics {{ font-size: 12px; font-family: monospace; white-space: pre; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(label)} · seeds {html.escape(str(session.seeds))}</p>
{warning}
{''.join(sections)}
</body></html>
"""


def _row(name, signal, mask, metrics, label) -> str:
    mask_img = ""
    if mask is not None:
        fig = plots.mask_figure(torch.as_tensor(mask), "", label)
        mask_img = f"<img src='{figure_data_uri(fig)}' width='360' alt='mask'>"
    spec = plots.spectrogram_figure(signal, name, label)
    text = "\n".join(f"{k}: {_fmt(metrics.get(k))}" for k in STANDARD_METRICS if k in metrics)
    return (f"<tr><td><b>{html.escape(name)}</b></td>"
            f"<td><audio controls preload='metadata' src='{audio_data_uri(signal)}'></audio></td>"
            f"<td>{mask_img}</td><td><img src='{figure_data_uri(spec)}' width='420' "
            f"alt='spectrogram'></td><td class='metrics'>{html.escape(text)}</td></tr>")
