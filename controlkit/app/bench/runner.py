"""Execute benchmark tasks in parallel: in-process, a local process pool, or a Ray cluster.

:func:`run_tasks` maps a picklable function over picklable tasks and returns one
:class:`TaskOutcome` per task, *in task order*, whatever order they finished in.  A task
that raises is reported (its error text and traceback tail), never fatal: the rest of the
grid still runs.  Progress is shown with a rich progress bar, or reported to a callback.

Executors
---------
``jobs == 1`` and no Ray address
    Serial, in this process (deterministic, debuggable; what the tests use).
``jobs > 1``
    :class:`concurrent.futures.ProcessPoolExecutor` with ``jobs`` workers.
``ray_address``
    Ray: ``ray.init(address=ray_address)``; ``"local"`` starts a local instance with
    ``jobs`` CPUs.  Each task is one ``ray.remote`` call.

Examples
--------
>>> outcomes = run_tasks(abs, [-1, 2], jobs=1)
>>> [o.value for o in outcomes]
[1, 2]
>>> run_tasks(int, ["x"], jobs=1)[0].ok
False
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from identification.errors import ControlkitError

__all__ = ["ProgressCallback", "TaskOutcome", "ray_session", "run_tasks"]

T = TypeVar("T")
R = TypeVar("R")

#: Called after each finished task with (number done, total).
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class TaskOutcome(Generic[R]):
    """What one task produced: its value, or the error that stopped it.

    Parameters
    ----------
    value
        The function's return value (``None`` when it raised).
    error
        ``"ExceptionType: message"`` when it raised, else empty.
    traceback_tail
        The last lines of the traceback, for the report's failure section.
    wall_s
        Wall-clock seconds the task took in its worker.
    """

    value: R | None
    error: str = ""
    traceback_tail: str = ""
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the task returned normally."""
        return not self.error


def _call_safely(fn: Callable[[T], R], task: T) -> TaskOutcome[R]:
    """Run ``fn(task)`` and capture any exception as data (runs inside the worker)."""
    start = time.perf_counter()
    try:
        value = fn(task)
    except Exception as exc:
        tail = "".join(traceback.format_exception(exc)[-3:]).strip()
        return TaskOutcome(None, f"{type(exc).__name__}: {exc}", tail, time.perf_counter() - start)
    return TaskOutcome(value, wall_s=time.perf_counter() - start)


@contextmanager
def _progress_bar(total: int, description: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    if not enabled or total == 0:
        yield lambda _done: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        task_id = bar.add_task(description, total=total)
        yield lambda done: bar.update(task_id, completed=done)


def _serial(fn: Callable[[T], R], tasks: Sequence[T], tick: Callable[[], None]) -> list[TaskOutcome[R]]:
    outcomes: list[TaskOutcome[R]] = []
    for task in tasks:
        outcomes.append(_call_safely(fn, task))
        tick()
    return outcomes


def _process_pool(
    fn: Callable[[T], R], tasks: Sequence[T], jobs: int, tick: Callable[[], None]
) -> list[TaskOutcome[R]]:
    results: list[TaskOutcome[R] | None] = [None] * len(tasks)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        pending: dict[Future[TaskOutcome[R]], int] = {
            pool.submit(_call_safely, fn, task): i for i, task in enumerate(tasks)
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                try:
                    results[i] = fut.result()
                except Exception as exc:
                    results[i] = TaskOutcome(None, f"worker failed: {type(exc).__name__}: {exc}")
                tick()
    return [r if r is not None else TaskOutcome(None, "task lost") for r in results]


@contextmanager
def ray_session(address: str | None, jobs: int = 1) -> Iterator[None]:
    """Connect to Ray for the duration of a block (no-op when ``address`` is ``None``).

    ``"local"`` starts a local instance with ``jobs`` CPUs and no dashboard; any other value
    is passed to ``ray.init(address=...)``.  A session already open is reused and left open.
    """
    if address is None:
        yield
        return
    try:
        import ray
    except ImportError as exc:
        raise ControlkitError(
            "--ray needs the 'ray' package; install the bench extra: pip install 'controlkit[bench]'"
        ) from exc
    started_here = False
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        started_here = True
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()


def _ray(
    fn: Callable[[T], R], tasks: Sequence[T], address: str, jobs: int, tick: Callable[[], None]
) -> list[TaskOutcome[R]]:
    with ray_session(address, jobs):
        import ray

        remote = ray.remote(num_cpus=1)(_call_safely)
        refs = [remote.remote(fn, task) for task in tasks]
        index = {ref: i for i, ref in enumerate(refs)}
        results: list[TaskOutcome[R] | None] = [None] * len(tasks)
        remaining = list(refs)
        while remaining:
            ready, remaining = ray.wait(remaining, num_returns=1)
            for ref in ready:
                try:
                    results[index[ref]] = ray.get(ref)
                except Exception as exc:
                    results[index[ref]] = TaskOutcome(None, f"ray task failed: {type(exc).__name__}: {exc}")
                tick()
        return [r if r is not None else TaskOutcome(None, "task lost") for r in results]


def run_tasks(
    fn: Callable[[T], R],
    tasks: Sequence[T],
    *,
    jobs: int = 1,
    ray_address: str | None = None,
    progress: bool | ProgressCallback = False,
    description: str = "bench",
) -> list[TaskOutcome[R]]:
    """Run ``fn`` on every task; return the outcomes in task order.

    Parameters
    ----------
    fn
        A picklable (module-level) function of one task.
    tasks
        Picklable task records.
    jobs
        Worker processes (or Ray CPUs for ``ray_address="local"``); 1 runs serially here.
    ray_address
        Run on Ray at this address (``"local"`` starts a local instance); ``None``: no Ray.
    progress
        ``True`` shows a rich progress bar; a callable receives ``(done, total)``.
    description
        Label of the progress bar.

    Raises
    ------
    ControlkitError
        ``jobs < 1``, or Ray requested but not installed.
    """
    if jobs < 1:
        raise ControlkitError(f"jobs must be >= 1, got {jobs}")
    total = len(tasks)
    callback: ProgressCallback | None = progress if callable(progress) else None
    done = 0
    with _progress_bar(total, description, progress is True) as update:

        def tick() -> None:
            nonlocal done
            done += 1
            update(done)
            if callback is not None:
                callback(done, total)

        if ray_address is not None:
            return _ray(fn, tasks, ray_address, jobs, tick)
        if jobs == 1 or total <= 1:
            return _serial(fn, tasks, tick)
        return _process_pool(fn, tasks, min(jobs, total), tick)
