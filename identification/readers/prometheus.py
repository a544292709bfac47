"""Prometheus text exposition scrapes (vLLM's ``/metrics``), one or several per file.

Scrapes and their times
-----------------------
A file holds one scrape or several concatenated.  A new scrape starts at a comment line
``# time_s=<seconds>`` (which also gives its time), or where a ``# HELP``/``# TYPE`` line names a
metric already seen in the current scrape.  A scrape's time is its ``# time_s=`` value, else the
latest sample timestamp in it (made relative to the first scrape of the file), else, for a file
with a single scrape, 0.  Several scrapes without times are an error (step times could not be
derived).

Values
------
Each sample name becomes a column: counters as ``<name>_total``, histogram ``_sum``/``_count``
(buckets and ``_created`` are dropped), gauges as they are.  Label sets of the same sample name
are **summed** (e.g. several engines; the KV usage fraction is averaged instead), except those
a ``where`` clause excludes: a clause naming a label keeps only the label sets with that value,
and the selected value is added as a column.
``vllm:cache_config_info`` gives ``num_gpu_blocks`` (summed over engines) and ``block_size``
(the largest) from its labels.
The frame produced here goes through the sampled-metrics reader for names, checks and runs.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from identification.errors import TelemetryError
from identification.readers.common import LINE, canonical_metric_name, normalise_value

__all__ = ["read_prometheus_text", "split_scrapes"]

_TIME_COMMENT = re.compile(r"^#\s*time_s\s*=\s*(\S+)\s*$")
_META_LINE = re.compile(r"^#\s*(HELP|TYPE)\s+(\S+)")
_INFO_LABELS = ("num_gpu_blocks", "block_size")


def _add(a: float, b: float) -> float:
    return a + b


def split_scrapes(text: str, path: str) -> list[tuple[int, float | None, str]]:
    """Split text into scrapes: (first line number, ``# time_s=`` value or None, text)."""
    scrapes: list[tuple[int, float | None, str]] = []
    start: int = 1
    time_s: float | None = None
    buf: list[str] = []
    seen: set[tuple[str, str]] = set()

    def close() -> None:
        if any(ln.strip() and not ln.lstrip().startswith("#") for ln in buf) or time_s is not None:
            scrapes.append((start, time_s, "\n".join(buf) + "\n"))

    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        timed = _TIME_COMMENT.match(stripped)
        meta = _META_LINE.match(stripped)
        if timed or (meta and (meta.group(1), meta.group(2)) in seen):
            close()
            start, buf, seen = number, [], set()
            time_s = None
            if timed:
                try:
                    time_s = float(timed.group(1))
                except ValueError:
                    raise TelemetryError(
                        f"bad scrape time {timed.group(1)!r}; expected '# time_s=<seconds>'",
                        path=path,
                        line=number,
                        field="time_s",
                    ) from None
                if not math.isfinite(time_s):
                    raise TelemetryError(
                        "non-finite scrape time; expected a finite number of seconds",
                        path=path,
                        line=number,
                        field="time_s",
                    )
                continue
        if meta:
            seen.add((meta.group(1), meta.group(2)))
        buf.append(line)
    close()
    return scrapes


def read_prometheus_text(text: str, path: str, where: dict[str, str] | None = None) -> pd.DataFrame:
    """Parse Prometheus text into a wide frame (``time_s``, one column per sample name, ``_line``)."""
    where = where or {}
    rows: list[dict[str, float]] = []
    stamps: list[float | None] = []
    explicit: list[bool] = []
    lines: list[int] = []
    selected: dict[str, str] = {}
    for start, time_s, block in split_scrapes(text, path):
        row: dict[str, float] = {}
        fractions: dict[str, list[float]] = {}
        latest: float | None = None
        try:
            families = list(text_string_to_metric_families(block))
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            raise TelemetryError(
                f"not valid Prometheus text exposition ({exc}); expected lines "
                "'name{labels} value [timestamp]'",
                path=path,
                line=start,
            ) from exc
        for family in families:
            for sample in family.samples:
                name = sample.name
                if name.endswith(("_bucket", "_created", "_gsum", "_gcount")):
                    continue
                labels = sample.labels
                if any(k in labels and normalise_value(labels[k]) != v for k, v in where.items()):
                    continue
                selected.update({k: v for k, v in where.items() if k in labels})
                if sample.timestamp is not None:
                    stamp = float(sample.timestamp)
                    latest = stamp if latest is None else max(latest, stamp)
                if name.endswith("cache_config_info"):
                    for key in _INFO_LABELS:
                        if key in labels:
                            try:
                                value = float(labels[key])
                                # capacity adds up over engines; the block size is shared
                                row[key] = (max if key == "block_size" else _add)(row.get(key, 0.0), value)
                            except ValueError:
                                raise TelemetryError(
                                    f"label {key}={labels[key]!r} is not a number",
                                    path=path,
                                    line=start,
                                    field=key,
                                ) from None
                    continue
                if canonical_metric_name(name) == "kv_cache_usage_perc":
                    fractions.setdefault(name, []).append(float(sample.value))
                else:
                    row[name] = row.get(name, 0.0) + float(sample.value)
        row.update({name: float(np.mean(values)) for name, values in fractions.items()})
        rows.append(row)
        stamps.append(time_s if time_s is not None else latest)
        explicit.append(time_s is not None)
        lines.append(start)
    if not rows:
        raise TelemetryError("no Prometheus samples found; expected lines 'name{labels} value'", path=path)
    frame = pd.DataFrame.from_records(rows)
    if all(s is not None for s in stamps):
        times = np.asarray(stamps, dtype="float64")
        frame.insert(0, "time_s", times if all(explicit) else times - times[0])
    elif len(rows) == 1:
        frame.insert(0, "time_s", 0.0)
    else:
        missing = next(i for i, s in enumerate(stamps) if s is None)
        raise TelemetryError(
            f"{len(rows)} scrapes but scrape {missing + 1} has no time; start each scrape with a "
            "'# time_s=<seconds>' comment or give sample timestamps",
            path=path,
            line=lines[missing],
            field="time_s",
        )
    for key, label in selected.items():
        frame[key] = label
    frame[LINE] = np.asarray(lines, dtype=np.int64)
    return frame
