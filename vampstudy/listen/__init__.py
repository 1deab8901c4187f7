"""``vampstudy listen``: a blinded listening test (MUSHRA, ITU-R BS.1534-3) of a finished study.

Modules, one job each:

* :mod:`~vampstudy.listen.design`  – pure: items × conditions → trials, blocks, per-rater order
  and letters, opaque stimulus ids;
* :mod:`~vampstudy.listen.stimuli` – audio: excerpts, low-pass anchors, loudness matching, WAVs;
* :mod:`~vampstudy.listen.journal` – the local append-only journal of submitted trials;
* :mod:`~vampstudy.listen.stats`   – pure: BS.1534-3 post-screening and the statistics;
* :mod:`~vampstudy.listen.results` – ratings, screening, summary and metrics onto the study's runs;
* :mod:`~vampstudy.listen.server`  – the Starlette app and uvicorn server serving ``static/``.
"""
