"""The one error hierarchy of controlkit, and its warning classes.

Every error subclasses a built-in as well, so callers that catch ``ValueError``
or ``RuntimeError`` keep working.  Messages say the value, the allowed range and
what to do.  This module lives in :mod:`identification`, the lowest layer, so
that every package can raise the same classes; :mod:`controlkit` re-exports them.
"""

from __future__ import annotations

__all__ = [
    "ControlkitError",
    "ControlkitWarning",
    "ExportError",
    "ExtrapolationWarning",
    "FitQualityWarning",
    "InfeasibleSpecError",
    "MemoryUnknownWarning",
    "NotFittedError",
    "PolicyError",
    "TelemetryError",
    "UncertifiedError",
]


#: Longest message a :class:`TelemetryError` keeps (bad input is echoed, but bounded).
MAX_MESSAGE_CHARS = 1000


class ControlkitError(Exception):
    """Base class of every error raised by controlkit."""


class TelemetryError(ControlkitError, ValueError):
    """Telemetry that cannot be read: names the file, line, field and the expected form.

    Parameters
    ----------
    message
        What is wrong and what was expected.
    path
        The file (or ``"<memory>"``) the bad data came from.
    line
        1-based line number in that file (the header is line 1 for CSV), if known.
    field
        The column or key that is wrong, if known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        if len(message) > MAX_MESSAGE_CHARS:  # never echo a whole 10 MB line back
            message = message[: MAX_MESSAGE_CHARS - 40] + f"... [{len(message)} characters in all]"
        self.path = path
        self.line = line
        self.field = field
        self.reason = message
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class NotFittedError(ControlkitError, AttributeError):
    """A model's fitted attribute was read before ``fit`` was called."""


class InfeasibleSpecError(ControlkitError, ValueError):
    """A specification (SLO, bounds, capacity) that no controller or operating point can meet."""


class UncertifiedError(ControlkitError, RuntimeError):
    """A controller whose certificate has at least one failing claim."""


class ExportError(ControlkitError, ValueError):
    """An exported engine configuration that the engine's own validation would reject."""


class PolicyError(ControlkitError, ValueError):
    """A policy file or policy spec string that cannot be built into a policy."""


class ControlkitWarning(UserWarning):
    """Base class of controlkit's warnings."""


class FitQualityWarning(ControlkitWarning):
    """A fit that ran but is doubtful (few points, poor R², wide intervals)."""


class ExtrapolationWarning(ControlkitWarning):
    """A model or measured table evaluated outside the range of its evidence."""


class MemoryUnknownWarning(FitQualityWarning):
    """The telemetry has no KV-cache capacity: only the latency model is identified."""
