"""Which side files a policy may read (``docs/validation.md``, "Files a policy reads").

A policy file can name a side file (``bca``'s ``params.table``); inside an engine that file is
read at start and on every reload, by the engine's user.  So a policy may read only:

* a path **relative to its policy file's folder** that stays inside that folder, or
* a path inside a folder the operator allowed explicitly in ``CONTROLKIT_TABLE_DIRS``
  (``os.pathsep``-separated).

Spec strings (``CONTROLKIT_POLICY=bca:table=PATH``) have no policy file, so they may name only
files in allowed folders.  The target must be a regular file (not ``/dev/zero``, not a FIFO)
of at most :data:`MAX_TABLE_BYTES`; symlinks are resolved before the folder check.  Errors name
the path and the rule, never the file's content.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from identification.errors import PolicyError

__all__ = ["MAX_TABLE_BYTES", "TABLE_DIRS_ENV", "allowed_dirs", "read_side_file", "resolve_side_file"]

#: Environment variable listing the folders policies may read side files from.
TABLE_DIRS_ENV = "CONTROLKIT_TABLE_DIRS"
#: Largest side file read (bytes); a sweep table is a few kB.
MAX_TABLE_BYTES = 1024 * 1024


def allowed_dirs(policy_dir: str | None) -> list[Path]:
    """Return the folders side files may lie in: the policy file's folder and ``$CONTROLKIT_TABLE_DIRS``."""
    dirs = [Path(d).resolve() for d in os.environ.get(TABLE_DIRS_ENV, "").split(os.pathsep) if d.strip()]
    if policy_dir:
        dirs.insert(0, Path(policy_dir).resolve())
    return dirs


def _shown(path: str) -> str:
    return repr(path if len(path) <= 120 else path[:117] + "...")


def resolve_side_file(name: str, policy_dir: str | None, what: str) -> Path:
    """Resolve ``name`` under the rules above; raise :class:`PolicyError` if it breaks one."""
    dirs = allowed_dirs(policy_dir)
    if not dirs:
        raise PolicyError(
            f"{what} {_shown(name)}: a policy given as a spec string may read only files in folders listed "
            f"in ${TABLE_DIRS_ENV}; set it, or name the file from a policy file beside it"
        )
    raw = Path(name)
    candidate = raw if raw.is_absolute() else dirs[0] / raw
    real = candidate.resolve()
    if not any(real == d or d in real.parents for d in dirs):
        raise PolicyError(
            f"{what} {_shown(name)} lies outside the policy file's folder and ${TABLE_DIRS_ENV}; "
            "a policy reads only files there"
        )
    try:
        mode = real.stat().st_mode
    except OSError as exc:
        raise PolicyError(f"{what} {_shown(name)}: cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise PolicyError(f"{what} {_shown(name)} is not a regular file")
    return real


def read_side_file(name: str, policy_dir: str | None, what: str) -> str:
    """Read a side file under the rules above (bounded size, UTF-8)."""
    path = resolve_side_file(name, policy_dir, what)
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_TABLE_BYTES + 1)
    except OSError as exc:
        raise PolicyError(f"{what} {_shown(name)}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_TABLE_BYTES:
        raise PolicyError(f"{what} {_shown(name)} is larger than {MAX_TABLE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"{what} {_shown(name)} is not UTF-8 text") from None
