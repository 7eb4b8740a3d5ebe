"""Baton's jobs: all IO and orchestration, grouped so the folder shows the flow.

- Stages, in pipeline order, each one module with ``run(cfg, store)``: ``sample``, ``replay``, ``score``,
  ``labels`` (a subpackage: task, export, import_, checks), ``decide``, ``report``; ``migrate`` runs them all
  (`baton run`), ``nightly`` runs one night of them.
- Plumbing: ``config`` (the run config), ``store`` (the run store), ``contracts`` (table validation),
  ``shards``, ``lease``, ``integrity``, ``preflight``, ``errors`` (exit codes), ``entry`` (shared argument helpers).
- Commands on top: ``cli`` (`baton`), which loads the command modules; nothing imports it. ``validate``,
  ``submit``, ``demo`` are commands only.

May import: common/, inference/, calibration/ and third-party packages; never jobs.cli.
"""
