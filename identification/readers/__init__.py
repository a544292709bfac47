"""Telemetry readers: one module per source kind, all producing :mod:`identification.records` frames.

Use :func:`identification.read_telemetry`, which detects the format of each file; the modules
here are the pieces it dispatches to.
"""

from __future__ import annotations

from identification.readers.common import KNOWN_KEY_COLUMNS, METRIC_ALIASES, canonical_metric_name
from identification.readers.sampled import SEGMENT_COLUMN

__all__ = ["KNOWN_KEY_COLUMNS", "METRIC_ALIASES", "SEGMENT_COLUMN", "canonical_metric_name"]
