"""The bottom of the house: what jobs/, inference/ and calibration/ all share, and nothing else.

- ``common.models``: ``Strict``, the pydantic base of every config model (unknown keys are errors).
- ``common.keys``: ``isin`` for string keys by Arrow's hash set (pandas 3's str ``isin`` is slow on many values).
- ``common.tables``: the table column lists and the one table-file reader (format by extension, a file or a
  folder of them, local or s3://).

May import: the standard library and third-party packages only; never jobs/, inference/ or calibration/.
"""
