"""Helpers shared across the fixture catalog."""

from __future__ import annotations

import json
import math
from collections import OrderedDict

SCALE = 2.0
UNUSED_CONSTANT = 41


def helper(x: float) -> float:
    """Double, then round (keeps outputs comparable across runs)."""
    # Rounding keeps float noise out of the golden comparisons.
    return round(x * SCALE, 6)


def unused_helper() -> str:
    return json.dumps(OrderedDict())


def scale(values: list[float]) -> list[float]:
    # Same name as components.models.scale: the inliner must rename one of them.
    return [math.sqrt(v) for v in values]
