"""Argument checks shared by the commands: output paths, finite bounded numbers, Ray addresses.

Every check fails before any work is done, with one line naming the option and what was
expected (exit 2, bad usage).
"""

from __future__ import annotations

import math
import re
import socket
from pathlib import Path
from typing import Any

import click

__all__ = ["FiniteFloat", "check_ray_address", "output_path"]

#: Seconds to wait for a Ray head before ``--ray ADDRESS`` is refused.
RAY_CONNECT_TIMEOUT_S = 10.0


def output_path(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Click callback: an output file whose folder exists (``-``/``None`` pass through)."""
    if value is None or value == "-":
        return value
    path = Path(str(value))
    if path.is_dir():
        raise click.BadParameter(f"{value!s:.200} is a folder; expected a file name", ctx=ctx, param=param)
    folder = path.parent
    if not folder.is_dir():
        raise click.BadParameter(
            f"the folder {str(folder)[:200]!r} does not exist; create it first", ctx=ctx, param=param
        )
    return value


class FiniteFloat(click.ParamType[float, Any]):
    """A finite number within ``(lo, hi]`` (``lo`` excluded when ``open_lo``), never NaN or inf."""

    name = "float"

    def __init__(self, lo: float, hi: float, *, open_lo: bool = True) -> None:
        self.lo, self.hi, self.open_lo = lo, hi, open_lo

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{str(value)[:60]!r} is not a number", param, ctx)
        low_ok = number > self.lo if self.open_lo else number >= self.lo
        if not (math.isfinite(number) and low_ok and number <= self.hi):
            bracket = "(" if self.open_lo else "["
            self.fail(f"{str(value)[:60]!r} is not a finite number in {bracket}{self.lo:g}, {self.hi:g}]", param, ctx)
        return number


_HOST_PORT = re.compile(r"^(?:ray://)?(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")


def check_ray_address(address: str | None) -> None:
    """Refuse a ``--ray`` address that is malformed or whose head does not answer in time.

    ``local`` and ``auto`` are Ray's own; anything else must be ``[ray://]HOST:PORT`` with a
    head listening (a TCP connect with a :data:`RAY_CONNECT_TIMEOUT_S` timeout), so a bad
    address fails in seconds instead of hanging in ``ray.init``.
    """
    if address is None or address in ("local", "auto"):
        return
    match = _HOST_PORT.match(address.strip())
    if match is None or not 0 < int(match["port"]) < 65536:
        raise click.BadParameter(
            f"{address[:100]!r}: expected 'local', 'auto' or [ray://]HOST:PORT", param_hint="'--ray'"
        )
    host = match["host"].strip("[]")
    try:
        socket.create_connection((host, int(match["port"])), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise click.BadParameter(
            f"no Ray head answers at {address[:100]!r} within {RAY_CONNECT_TIMEOUT_S:g} s ({exc})",
            param_hint="'--ray'",
        ) from None
