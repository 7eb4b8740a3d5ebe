"""The labels stage and `baton labels`: human labels as living data, one module per job.

- ``task``: the dimensions annotators judge (``--task-config``) and their answer scales;
- ``export``: choose units by a sampling design (calibration.design), blind them, write a batch and its key;
- ``import_``: un-blind, validate, quarantine and commit answers; the pipeline's labels stage (:func:`run`);
- ``design_table``: the run store's ``label_design`` table (each batch's pool and inclusion probabilities), its one
  reader, and the legacy ``labels/design-<batch>.parquet`` documents of older runs;
- ``checks``: screening of a labels table, design weights, agreement and representativeness;
- ``command``: the `baton labels export|import|check` command line.

May import: jobs plumbing (config, store, contracts, errors, entry), calibration/ and common/; never jobs.cli or
another stage.
"""

from __future__ import annotations


def run(cfg, store) -> dict:
    """The pipeline's labels stage: validate the labels named in the config and commit them; re-imported whenever
    the file changes, bad rows quarantined (jobs.labels.import_.import_labels_table)."""
    from jobs.labels.import_ import import_labels_table

    return import_labels_table(cfg, store)
