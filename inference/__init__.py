"""Baton's inference: engines that replay traffic to candidate models and scorers that grade their answers.

Everything here works on pandas batches (Ray Data style: a class with a typed config and one ``__call__``);
IO and orchestration live in ``jobs/``.
"""
