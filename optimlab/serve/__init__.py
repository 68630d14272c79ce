"""`optimlab serve`: the lab in the browser — a JSON API over the layers below and static pages.

* :mod:`~optimlab.serve.hyperparameters` — every optimizer's hyperparameters with defaults, ranges
  and slider bounds, read from the registry;
* :mod:`~optimlab.serve.landscape` — the playground's computations: checked requests (with caps),
  :func:`~optimlab.landscapes.run_landscape`, JSON answers;
* :mod:`~optimlab.serve.files` — paths under the results root only (no ``..``, no absolute
  paths, no symlinks out), and the read-only view of comparisons and diagnoses;
* :mod:`~optimlab.serve.app` — the FastAPI application wiring them to URLs.

The browser only draws: every number comes from these modules.  FastAPI is imported only by
``app`` (the ``optimlab[serve]`` extra).
"""
