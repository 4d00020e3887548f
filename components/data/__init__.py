"""Catalog: data sets (labelled signals with folds)."""

from components.data.base import Record, SignalDataset

__all__ = ["Record", "SignalDataset"]
