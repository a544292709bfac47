"""A buffered, rotated JSONL writer of step records (the ``controlkit.steps/1`` format).

Each file starts with one header line ``{"schema": "controlkit.steps/1", ...}`` (engine
facts: block size, KV capacity, limits, the wall-clock time of ``t_s = 0``), then one JSON
object per engine step with the fields of :class:`identification.records.StepRecord`
(``t_s``, ``step_s``, ``num_running``, ..., ``num_context_tokens``, ``max_active_seqs``,
``max_batched_tokens``).  ``identification.read_telemetry`` and ``controlkit identify`` read
these files directly.

Records are kept in memory as tuples and serialised ``buffer_steps`` at a time, so the
per-step cost inside the engine is one tuple append.  When the file would exceed
``max_bytes`` it is rotated: ``steps.jsonl`` becomes ``steps.jsonl.1`` (older files shift
up, at most ``backups`` are kept) and a fresh file with its own header is started.

Examples
--------
>>> import json, tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> w = StepLogWriter(d / "steps.jsonl", header={"block_size": 16}, buffer_steps=2)
>>> w.write((0.0, 0.01, 4, 0, 0, 4, 10, 100, 0, 160, 8, 2048))
>>> w.close()
>>> lines = (d / "steps.jsonl").read_text().splitlines()
>>> json.loads(lines[0])["schema"], json.loads(lines[1])["num_running"]
('controlkit.steps/1', 4)
"""

from __future__ import annotations

import atexit
import json
import os
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from identification.records import STEP_COLUMNS, STEP_OPTIONAL_COLUMNS

__all__ = ["STEP_LOG_FIELDS", "STEP_LOG_SCHEMA", "StepLogWriter"]

#: Schema tag of the header line.
STEP_LOG_SCHEMA = "controlkit.steps/1"
#: Field order of the tuples passed to :meth:`StepLogWriter.write`.
STEP_LOG_FIELDS: tuple[str, ...] = (*STEP_COLUMNS, *STEP_OPTIONAL_COLUMNS)

_OPEN: weakref.WeakSet[StepLogWriter] = weakref.WeakSet()


def _flush_all() -> None:  # pragma: no cover - runs at interpreter exit
    for writer in list(_OPEN):
        writer.close()


atexit.register(_flush_all)


class StepLogWriter:
    """Append step records to a JSONL file, buffered and rotated.

    Parameters
    ----------
    path
        The log file; its directory is created if missing.
    header
        Extra header fields (engine facts); ``schema`` and ``fields`` are added.
    buffer_steps
        Records kept in memory before a write (>= 1).
    max_bytes
        Rotate when the file would grow past this size (bytes, >= 4096).
    backups
        Rotated files kept (``path.1`` ... ``path.N``); 0 truncates instead.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        header: Mapping[str, Any] | None = None,
        buffer_steps: int = 512,
        max_bytes: int = 64 * 2**20,
        backups: int = 3,
    ) -> None:
        if buffer_steps < 1:
            raise ValueError(f"buffer_steps must be >= 1, got {buffer_steps}")
        if max_bytes < 4096:
            raise ValueError(f"max_bytes must be >= 4096 bytes, got {max_bytes}")
        if backups < 0:
            raise ValueError(f"backups must be >= 0, got {backups}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.header = {"schema": STEP_LOG_SCHEMA, "fields": list(STEP_LOG_FIELDS), **dict(header or {})}
        self.buffer_steps = buffer_steps
        self.max_bytes = max_bytes
        self.backups = backups
        self.steps_written = 0
        self.rotations = 0
        self._buffer: list[tuple[float | int, ...]] = []
        self._size = self._start_file()
        self._closed = False
        _OPEN.add(self)

    def _header_line(self) -> str:
        return json.dumps(self.header, separators=(",", ":")) + "\n"

    def _start_file(self) -> int:
        line = self._header_line()
        with open(self.path, "w", encoding="utf-8") as fh:
            fh.write(line)
        return len(line.encode())

    def _rotate(self) -> None:
        if self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self.rotations += 1
        self._size = self._start_file()

    def write(self, record: tuple[float | int, ...]) -> None:
        """Buffer one record, a tuple in :data:`STEP_LOG_FIELDS` order (ignored after close)."""
        if self._closed:
            return
        self._buffer.append(record)
        if len(self._buffer) >= self.buffer_steps:
            self.flush()

    def flush(self) -> None:
        """Write the buffered records to the file (rotating first if it would overflow)."""
        if not self._buffer:
            return
        fields = STEP_LOG_FIELDS
        lines = [json.dumps(dict(zip(fields, rec, strict=True)), separators=(",", ":")) + "\n"
                 for rec in self._buffer]
        self._buffer.clear()
        chunk: list[str] = []
        chunk_bytes = 0
        header_bytes = len(self._header_line().encode())
        for line in lines:
            n = len(line)
            overflow = self._size + chunk_bytes + n > self.max_bytes
            if overflow and (chunk or self._size > header_bytes):
                self._append(chunk)
                chunk, chunk_bytes = [], 0
                self._rotate()
            chunk.append(line)
            chunk_bytes += n
        self._append(chunk)
        self.steps_written += len(lines)

    def _append(self, lines: list[str]) -> None:
        if not lines:
            return
        text = "".join(lines)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(text)
        self._size += len(text.encode())

    def close(self) -> None:
        """Flush and stop; further writes are ignored."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        _OPEN.discard(self)
