"""Mutation generators and outcome classifiers shared by tests/fuzz and bench/fuzz.py.

Every generator takes a :class:`random.Random` (hypothesis's ``st.randoms()`` in the suite, a
seeded one in ``bench/fuzz.py``) and returns bytes to write, so the same mutations run in both.
The bases are real rows: ``tests/fixtures/telemetry`` (small extracts of ../shared/data, see
the README there) and, when present, rows of the full ``background_engine_metrics.csv.gz``.

Outcomes (see docs/validation.md):

* ``own_error``: a :class:`~identification.errors.ControlkitError` (our types) whose message
  names the file or field;
* ``accepted``: a fitted/loaded/built object that passes :func:`identification.validation`'s
  sanity rules;
* ``crash``: any other exception (or an own error with an unbounded message);
* ``nonsense``: an object that was accepted but breaks a sanity rule.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import random
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
TELEMETRY = FIXTURES / "telemetry"

#: Values a cell is replaced with: the classes the issue names, and their neighbours.
SPECIAL_VALUES: tuple[str, ...] = (
    "nan", "NaN", "inf", "-inf", "Infinity", "1e308", "-1e308", "1e15", "-1", "-0.5", "0", "",
    "abc", "True", "false", "None", "null", "9" * 40, "1e-320", "0x10", "1,5", " ", "\"", "'",
    "4294967296", "-9223372036854775809", "2e12", "7.7e14", "1e6",
)
_PRINTABLE = "abcxyzABC0123456789.-+eE,;:\"' \t#{}[]=_\\/"


# ---------------------------------------------------------------- text/CSV mutations
def _csv_rows(text: str) -> list[list[str]]:
    return [line.split(",") for line in text.splitlines()]


def _join(rows: list[list[str]]) -> str:
    return "\n".join(",".join(r) for r in rows) + "\n"


def _pick_row(rng: random.Random, rows: list[list[str]], header: bool) -> int:
    lo = 1 if header and len(rows) > 1 else 0
    return rng.randrange(lo, len(rows)) if rows else 0


def mutate_rows(rng: random.Random, rows: list[list[str]], *, header: bool = True) -> list[list[str]]:
    """Apply one random mutation to a table of cells (in place and returned)."""
    if not rows:
        return [[rng.choice(SPECIAL_VALUES)]]
    op = rng.randrange(13)
    i = _pick_row(rng, rows, header)
    row = rows[i]
    j = rng.randrange(len(row)) if row else 0
    if op <= 2 and row:  # a special value in a cell (the most common mutation)
        row[j] = rng.choice(SPECIAL_VALUES)
    elif op == 3 and row:  # a flipped character
        cell = row[j]
        k = rng.randrange(len(cell)) if cell else 0
        row[j] = cell[:k] + rng.choice(_PRINTABLE) + cell[k + 1 :]
    elif op == 4 and row:  # a dropped cell
        del row[j]
    elif op == 5:  # an extra cell
        row.insert(j, rng.choice(SPECIAL_VALUES))
    elif op == 6:  # reordered rows
        a, b = _pick_row(rng, rows, header), _pick_row(rng, rows, header)
        rows[a], rows[b] = rows[b], rows[a]
    elif op == 7:  # duplicated rows
        rows.insert(i, list(row))
    elif op == 8 and len(rows) > 1:  # deleted rows
        del rows[i]
    elif op == 9 and row:  # a whole column of one value (an outlier run)
        for r in rows[1 if header else 0 :]:
            if j < len(r) and rng.random() < 0.3:
                r[j] = rng.choice(("1e15", "1e308", "-1", "nan", "inf", "0", "2e12"))
    elif op == 10 and row:  # scaled number
        try:
            row[j] = repr(float(row[j]) * rng.choice((-1.0, 1e6, 1e-6, 1e300, 0.0)))
        except ValueError:
            row[j] = rng.choice(SPECIAL_VALUES)
    elif op == 11 and row:  # a whole column dropped (a key column missing from one file)
        for r in rows:
            if j < len(r):
                del r[j]
    else:  # a header cell renamed
        if rows[0]:
            k = rng.randrange(len(rows[0]))
            rows[0][k] = rng.choice((rows[0][k] + "x", "", "time_s", "num_requests_running", "model", rows[0][-1]))
    return rows


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """Binary-level damage: random bytes, a truncation, a NUL run, or invalid UTF-8."""
    op = rng.randrange(4)
    k = rng.randrange(len(data) + 1)
    if op == 0:
        return data[:k] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16))) + data[k:]
    if op == 1:
        return data[:k]
    if op == 2:
        return data[:k] + b"\x00" * rng.randrange(1, 64) + data[k:]
    return data[:k] + b"\xff\xfe\x80" + data[k:]


def mutate_table_text(rng: random.Random, text: str, *, n_max: int = 3) -> bytes:
    """1..n_max table mutations, sometimes followed by binary damage."""
    rows = _csv_rows(text)
    for _ in range(rng.randint(1, n_max)):
        rows = mutate_rows(rng, rows)
    data = _join(rows).encode("utf-8")
    if rng.random() < 0.1:
        data = mutate_bytes(rng, data)
    return data


def mutate_lines_text(rng: random.Random, text: str, *, n_max: int = 3) -> bytes:
    """Line-oriented mutations (Prometheus text, JSON Lines): values, lines, characters."""
    lines = text.splitlines()
    for _ in range(rng.randint(1, n_max)):
        if not lines:
            lines = [rng.choice(SPECIAL_VALUES)]
            continue
        i = rng.randrange(len(lines))
        op = rng.randrange(6)
        if op <= 1:  # replace one token (a value, usually) by a special value
            parts = lines[i].replace(",", " , ").replace(":", " : ").split(" ")
            if parts:
                k = rng.randrange(len(parts))
                parts[k] = rng.choice(SPECIAL_VALUES)
            lines[i] = " ".join(parts).replace(" , ", ",").replace(" : ", ":")
        elif op == 2:
            line = lines[i]
            k = rng.randrange(len(line)) if line else 0
            lines[i] = line[:k] + rng.choice(_PRINTABLE) + line[k + 1 :]
        elif op == 3:
            del lines[i]
        elif op == 4:
            lines.insert(rng.randrange(len(lines) + 1), lines[i])
        else:
            a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[a], lines[b] = lines[b], lines[a]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if rng.random() < 0.1:
        data = mutate_bytes(rng, data)
    return data


# ---------------------------------------------------------------- JSON mutations
_JSON_SPECIALS: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2**63, -(2**63), 1e308, -1e308, 0.0, -0.0, 1e-320, "", "abc", "0.05",
    [], {}, [1, 2], {"a": 1}, "nan", float("nan"), float("inf"), float("-inf"), 10**30, 0.5, 1e15,
    "/etc/passwd", "/dev/zero", "../../../../etc/hostname", "/proc/self/environ", "sweep.csv",
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = obj
    for p in path[:-1]:
        parent = parent[p]
    parent[path[-1]] = value
    return obj


def mutate_json(rng: random.Random, doc: Any, *, n_max: int = 3) -> bytes:
    """1..n_max structural mutations of a JSON document: values, types, deletions, keys."""
    doc = json.loads(json.dumps(doc))
    for _ in range(rng.randint(1, n_max)):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = rng.choice(paths)
        op = rng.randrange(6)
        try:
            if op <= 2:
                doc = _set(doc, path, rng.choice(_JSON_SPECIALS))
            elif op == 3:
                parent = doc
                for p in path[:-1]:
                    parent = parent[p]
                del parent[path[-1]]
            elif op == 4:  # a number scaled, a string changed
                parent = doc
                for p in path[:-1]:
                    parent = parent[p]
                v = parent[path[-1]]
                if isinstance(v, bool):
                    parent[path[-1]] = int(v)
                elif isinstance(v, int | float):
                    parent[path[-1]] = v * rng.choice((-1, 1000, 1e-3, 0, 10**6))
                elif isinstance(v, str):
                    parent[path[-1]] = v + rng.choice(("x", " ", "-1"))
                else:
                    parent[path[-1]] = str(v)
            else:  # an unknown key
                parent = doc
                for p in path[:-1]:
                    parent = parent[p]
                if isinstance(parent, dict):
                    parent[rng.choice(("zz", "priority", "kp", "table", "b_max"))] = rng.choice(_JSON_SPECIALS)
        except (KeyError, IndexError, TypeError):
            continue
    text = json.dumps(doc, allow_nan=True)
    data = text.encode("utf-8")
    if rng.random() < 0.08:
        data = mutate_bytes(rng, data)
    return data


# ---------------------------------------------------------------- outcomes
@dataclass
class Tally:
    """Counts of one fuzz target (what bench/fuzz.py prints)."""

    tried: int = 0
    own_error: int = 0
    accepted: int = 0
    crash: int = 0
    nonsense: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, outcome: str, detail: str = "") -> None:
        self.tried += 1
        setattr(self, outcome, getattr(self, outcome) + 1)
        if outcome in ("crash", "nonsense"):
            self.examples.setdefault(outcome, [])
            if len(self.examples[outcome]) < 8:
                self.examples[outcome].append(detail[:600])


#: Longest own error message accepted (an error echoes bounded input only).
MAX_MESSAGE_CHARS = 2000


def classify(run: Callable[[], list[str]]) -> tuple[str, str]:
    """Run ``run`` (returning the sanity problems of what it produced) and classify the outcome."""
    from identification.errors import ControlkitError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            problems = run()
    except ControlkitError as exc:
        message = str(exc)
        if len(message) > MAX_MESSAGE_CHARS:
            return "crash", f"unbounded message ({len(message)} chars): {message[:200]}"
        return "own_error", message
    except Exception as exc:
        return "crash", f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_tb(exc.__traceback__)[-3:])
    if problems:
        return "nonsense", "; ".join(problems)
    return "accepted", ""


def write_case(path: Path, data: bytes, *, gz: bool = False) -> Path:
    """Write a case (gzip-compressed when ``gz``)."""
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def finite(value: Any) -> bool:
    """True for a real finite number that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@contextlib.contextmanager
def captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """Capture stdout and stderr (for in-process CLI runs)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err
