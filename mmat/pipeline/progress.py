"""The progress bar of long pipeline commands lives with the run lifecycle (:mod:`mmat.store.progress`)."""

from mmat.store.progress import ProgressBar

__all__ = ["ProgressBar"]
