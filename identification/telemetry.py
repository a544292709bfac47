"""``read_telemetry``: read any supported telemetry files into one :class:`Telemetry`.

The format of each file is detected from its extension (``.gz`` is looked through) and its
header or first record; see ``docs/telemetry.md`` for the list of sources and their rules.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from identification.errors import TelemetryError
from identification.readers.common import (
    LINE,
    file_stem,
    normalise_series,
    normalise_value,
    open_text,
    read_csv_lines,
)
from identification.readers.detect import detect_kind, kind_of_columns, read_tabular
from identification.readers.prometheus import read_prometheus_text
from identification.readers.requests import read_requests_frame, read_trace_frame
from identification.readers.sampled import (
    SampledFrame,
    join_run_index,
    read_run_index,
    read_sampled_frame,
    run_names_for_index,
)
from identification.readers.steps import read_steps_frame
from identification.records import (
    REQUEST_COLUMNS,
    RUN_COLUMN,
    SkippedRow,
    SourceInfo,
    Telemetry,
)

__all__ = ["parse_where", "read_requests", "read_telemetry", "read_trace"]

PathLike = str | Path


def parse_where(where: Mapping[str, object] | Iterable[str] | None) -> dict[str, str]:
    """Normalise a selection to ``{column: normalised value}``.

    Examples
    --------
    >>> parse_where(["model=llama-2-7b", "max_num_seqs=64.0"])
    {'model': 'llama-2-7b', 'max_num_seqs': '64'}
    >>> parse_where({"max_num_seqs": 64})
    {'max_num_seqs': '64'}
    """
    if where is None:
        return {}
    if isinstance(where, Mapping):
        return {str(k).strip(): normalise_value(v) for k, v in where.items()}
    if isinstance(where, str):
        where = [where]
    out: dict[str, str] = {}
    for clause in where:
        column, sep, value = str(clause).partition("=")
        if not sep or not column.strip():
            raise TelemetryError(
                f"bad selection {str(clause)[:80]!r}; expected COLUMN=VALUE, e.g. model=llama-2-7b", field="where"
            )
        name, wanted = column.strip(), normalise_value(value)
        if name in out and out[name] != wanted:  # clauses AND: col=a AND col=b selects nothing
            raise TelemetryError(
                f"selections {name}={out[name]} and {name}={wanted} cannot both hold (repeated --where "
                "clauses AND together); give one value per column",
                field=name,
            )
        out[name] = wanted
    return out


@dataclass
class _Acc:
    """What has been read so far, before concatenation and selection."""

    samples: list[tuple[str, SampledFrame]] = field(default_factory=list)
    indexes: list[tuple[str, pd.DataFrame, tuple[str, ...]]] = field(default_factory=list)
    steps: list[pd.DataFrame] = field(default_factory=list)
    requests: list[pd.DataFrame] = field(default_factory=list)
    sources: list[SourceInfo] = field(default_factory=list)
    skipped: list[SkippedRow] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)


def _span(frame: pd.DataFrame, column: str) -> tuple[float, float]:
    if column not in frame.columns or len(frame) == 0:
        return 0.0, 0.0
    values = frame[column].dropna()
    return (float(values.min()), float(values.max())) if len(values) else (0.0, 0.0)


def _read_one(path: Path, where: dict[str, str], skip: bool, acc: _Acc) -> None:
    name = str(path)
    if not path.exists():
        raise TelemetryError("no such file; expected an existing telemetry file", path=name)
    if not path.is_file():
        raise TelemetryError("not a regular file; pass telemetry files, not directories", path=name)
    kind = detect_kind(path)
    if kind == "prometheus":
        frame = read_prometheus_text(open_text(path), name, where)
        table_kind = "samples"
    else:
        if kind == "csv":
            frame = read_csv_lines(path)
        else:
            frame, header = read_tabular(path, kind)
            acc.meta.update(header)
        table_kind = kind_of_columns([c for c in frame.columns if c != LINE], name)
    if table_kind == "samples":
        sampled = read_sampled_frame(frame, name, skip_bad_rows=skip)
        acc.samples.append((name, sampled))
        acc.skipped.extend(sampled.skipped)
        t0, t1 = _span(sampled.samples, "time_s")
        acc.sources.append(SourceInfo(name, "samples", len(sampled.samples), t0, t1))
    elif table_kind == "run_index":
        index, keys, index_skipped = read_run_index(frame, name, skip_bad_rows=skip)
        acc.indexes.append((name, index, keys))
        acc.skipped.extend(index_skipped)
        acc.sources.append(SourceInfo(name, "run_index", len(index)))
    elif table_kind == "steps":
        steps, step_skipped = read_steps_frame(frame, name, skip_bad_rows=skip)
        acc.steps.append(steps)
        acc.skipped.extend(step_skipped)
        t0, t1 = _span(steps, "t_s")
        acc.sources.append(SourceInfo(name, "steps", len(steps), t0, t1))
    elif table_kind == "requests":
        requests, request_skipped = read_requests_frame(frame, name, skip_bad_rows=skip)
        acc.requests.append(requests)
        acc.skipped.extend(request_skipped)
        t0, t1 = _span(requests, "arrival_s")
        acc.sources.append(SourceInfo(name, "requests", len(requests), t0, t1))
    else:
        requests, trace_skipped = read_trace_frame(table_kind, frame, name, skip_bad_rows=skip)
        acc.requests.append(requests)
        acc.skipped.extend(trace_skipped)
        t0, t1 = _span(requests, "arrival_s")
        acc.sources.append(SourceInfo(name, table_kind, len(requests), t0, t1))


def _unique_runs(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """Rename runs that two files both use to ``run@file-stem`` so counters never mix."""
    seen: set[str] = set()
    out = []
    for frame in frames:
        names = set(frame[RUN_COLUMN].unique()) if len(frame) else set()
        clash = names & seen
        if clash and "_source" in frame.columns:
            stem = file_stem(str(frame["_source"].iloc[0]))
            frame = frame.assign(
                **{RUN_COLUMN: frame[RUN_COLUMN].map(lambda r, c=clash, s=stem: f"{r}@{s}" if r in c else r)}
            )
        seen |= set(frame[RUN_COLUMN].unique()) if len(frame) else set()
        out.append(frame.drop(columns=["_source"], errors="ignore"))
    return out


def _assemble_samples(acc: _Acc) -> tuple[pd.DataFrame, pd.DataFrame]:
    frames: list[pd.DataFrame] = []
    used: set[int] = set()
    run_frames: list[pd.DataFrame] = []
    for name, sampled in acc.samples:
        samples = sampled.samples
        for i, (iname, index, ikeys) in enumerate(acc.indexes):
            if any(k in ikeys for k in sampled.key_columns):
                samples = join_run_index(
                    samples, sampled.key_columns, index, ikeys, samples_path=name, index_path=iname
                )
                if i not in used:
                    used.add(i)
                    shared = tuple(k for k in sampled.key_columns if k in ikeys)
                    run_frames.append(
                        index.assign(**{RUN_COLUMN: run_names_for_index(index, shared).to_numpy()})
                    )
        frames.append(samples.assign(_source=name))
    for i, (iname, index, ikeys) in enumerate(acc.indexes):
        if i in used:
            continue
        if acc.samples:
            raise TelemetryError(
                f"the run index shares no key column with the sampled metrics; its keys are {list(ikeys)}",
                path=iname,
                line=1,
                field=ikeys[0],
            )
        run_frames.append(index.assign(**{RUN_COLUMN: run_names_for_index(index, ikeys).to_numpy()}))
    samples_all = pd.concat(_unique_runs(frames), ignore_index=True) if frames else Telemetry().samples
    runs = pd.concat(run_frames, ignore_index=True) if run_frames else Telemetry().runs
    return samples_all, runs


def _natural(text: str) -> tuple[int, float, str]:
    """Sort key: numbers by value first, then other text."""
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _select(frames: dict[str, pd.DataFrame], where: dict[str, str]) -> dict[str, pd.DataFrame]:
    for column, value in where.items():
        holders = [k for k, f in frames.items() if column in f.columns and len(f)]
        if not holders:
            available = sorted({c for f in frames.values() if len(f) for c in f.columns})
            raise TelemetryError(
                f"selection {column}={value}: no telemetry has a column {column!r}; "
                f"columns available: {available}",
                field=column,
            )
        before = {k: frames[k] for k in holders}
        for k in holders:
            f = frames[k]
            frames[k] = f.loc[(normalise_series(f[column]) == value).to_numpy()].reset_index(drop=True)
        if all(len(frames[k]) == 0 for k in holders):
            values = sorted({v for f in before.values() for v in normalise_series(f[column])}, key=_natural)
            shown = values if len(values) <= 40 else [*values[:40], "..."]
            raise TelemetryError(
                f"selection {column}={value} matches no rows; available values: {shown}", field=column
            )
    return frames


def read_telemetry(
    paths: PathLike | Sequence[PathLike],
    where: Mapping[str, object] | Iterable[str] | None = None,
    *,
    skip_bad_rows: bool = False,
    progress: bool = False,
) -> Telemetry:
    """Read telemetry files of any supported format into one :class:`Telemetry`.

    Parameters
    ----------
    paths
        One path or a list of paths: sampled engine metrics (CSV), run index CSVs, Prometheus
        text scrapes, step records (JSONL/CSV/Parquet), request records and request traces
        (Azure 2023, Mooncake, ShareGPT lengths, Vidur).  ``.gz`` files are read transparently.
    where
        Row selection: a mapping ``{column: value}`` or strings ``"COLUMN=VALUE"``; clauses AND
        together and values compare as normalised strings (``64`` matches ``64.0``).  A frame
        without the column is left as it is; for Prometheus text a clause naming a label selects
        that label set.
    skip_bad_rows
        Skip bad rows (recorded in ``Telemetry.skipped``) instead of raising.
    progress
        Show a progress bar on stderr when the input is large (over 2 MB in all).

    Returns
    -------
    Telemetry
        ``samples`` (canonical columns, key columns, ``run``, ``segment``), ``steps``,
        ``requests``, ``runs`` (run index rows), ``sources``, ``skipped`` and ``meta``.

    Raises
    ------
    TelemetryError
        For unreadable or unknown files and bad rows (file, line, field and expected form),
        and for a selection that matches nothing (with the available values).
    """
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    if not items:
        raise TelemetryError("no telemetry files given; expected at least one path")
    files = [Path(p) for p in items]
    selection = parse_where(where)
    acc = _Acc()
    total = sum(f.stat().st_size for f in files if f.is_file())
    if progress and total > 2_000_000:
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=Console(file=sys.stderr), transient=True) as bar:
            task = bar.add_task("reading telemetry", total=total)
            for f in files:
                bar.update(task, description=f"reading {f.name}")
                _read_one(f, selection, skip_bad_rows, acc)
                bar.advance(task, f.stat().st_size)
    else:
        for f in files:
            _read_one(f, selection, skip_bad_rows, acc)
    samples, runs = _assemble_samples(acc)
    steps = pd.concat(acc.steps, ignore_index=True) if acc.steps else Telemetry().steps
    if len(acc.steps) > 1:  # rotated logs of one run, given in any order
        steps = steps.sort_values([RUN_COLUMN, "t_s"], kind="stable", ignore_index=True)
    requests = pd.concat(acc.requests, ignore_index=True) if acc.requests else Telemetry().requests
    frames = _select({"samples": samples, "steps": steps, "requests": requests, "runs": runs}, selection)
    return Telemetry(
        steps=frames["steps"],
        samples=frames["samples"],
        requests=frames["requests"],
        sources=tuple(acc.sources),
        skipped=tuple(acc.skipped),
        meta=dict(acc.meta),
        runs=frames["runs"],
    )


def read_requests(path: PathLike, *, skip_bad_rows: bool = False) -> pd.DataFrame:
    """Read request records or a request trace into a frame of :data:`REQUEST_COLUMNS` + ``run``.

    Timing columns a trace does not have (``first_token_s``, ``finish_s``; ``arrival_s`` for
    length-only traces) are NaN; see ``docs/telemetry.md``.
    """
    telemetry = read_telemetry(path, skip_bad_rows=skip_bad_rows)
    if (
        len(telemetry.requests) == 0
        and telemetry.sources
        and telemetry.sources[0].kind in ("samples", "steps")
    ):
        raise TelemetryError(
            f"holds {telemetry.sources[0].kind}, not requests; expected columns "
            f"{list(REQUEST_COLUMNS)} or a known trace format",
            path=str(path),
        )
    return telemetry.requests


#: Alias of :func:`read_requests` for request traces (Azure, Mooncake, ShareGPT, Vidur).
read_trace = read_requests
