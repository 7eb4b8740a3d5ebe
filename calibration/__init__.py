"""Baton's calibration: statistics over frames and arrays, from scores and human labels to a typed decision.

- ``schema``: the ``Decision`` contract (decision.json) and the ``Verdict`` names; ``pipeline.decide`` is the one
  entry point (tables in, Decision out); ``decision``: the threshold and verdict rules, labels needed.
- ``config`` (the decision config), ``data`` (tables to arrays), ``models`` (PyMC), ``estimands``, ``segments``,
  ``baselines``, ``guards``, ``diagnostics``, ``agreement``, ``checks``.
- ``design``: survey design of the labels (designs, inclusion probabilities, weights and the model's adjustment).
- ``report``: rendering a Decision as Markdown and HTML.

May import: common/ and third-party packages; never jobs/ or inference/.
"""
