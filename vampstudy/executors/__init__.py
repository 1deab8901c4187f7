"""Executors beyond the built-in ones of :mod:`vampstudy.execute` (optional extras).

* :mod:`vampstudy.executors.process` — ``--executor process``: measurement and recording
  in one measuring process beside the model (no extra needed; helpers in
  :mod:`vampstudy.executors.measuring` and :mod:`vampstudy.executors.shm`).
* :mod:`vampstudy.executors.ray` — ``--executor ray``: a pool of Ray actors
  (``pip install 'vampstudy[ray]'``).
"""
