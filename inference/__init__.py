"""Baton's inference: engines that replay traffic to candidate models (``inference.engines``) and scorers that
grade their answers (``inference.scorers``).

Everything here works on pandas batches (Ray Data style: a class with a typed config and one ``__call__``);
IO and orchestration live in ``jobs/``.

May import: common/ (column lists, the table reader, the config base) and third-party packages; never jobs/ or
calibration/.
"""
