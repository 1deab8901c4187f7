"""Executors beyond the built-in ones of :mod:`vampstudy.execute` (optional extras).

* :mod:`vampstudy.executors.ray` — ``--executor ray``: a pool of Ray actors
  (``pip install 'vampstudy[ray]'``).
"""
