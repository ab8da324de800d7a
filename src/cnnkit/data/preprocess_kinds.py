"""The names of the preprocessing kinds, importable without torch (the command line lists them in its help)."""

PREPROCESSING_KINDS = ("standardize", "minmax", "none")
