"""Catalog: data sets (labelled signals with folds)."""

from __future__ import annotations

from components.data.base import Record, SignalDataset

__all__ = ["Record", "SignalDataset"]
