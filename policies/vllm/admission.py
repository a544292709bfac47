"""Apply a policy's ``admission_order`` to a FIFO waiting queue, in place and cheaply.

vLLM's FCFS ``waiting`` queue is a :class:`collections.deque` subclass; the hook calls
:func:`reorder_head` on it at the top of ``schedule()``, right after the decision, so the
indices still refer to the queue the observation listed.  This module does not import vLLM.

Examples
--------
>>> from collections import deque
>>> queue = deque("abcdef")
>>> reorder_head(queue, (3, 1))
True
>>> "".join(queue)
'dbacef'
>>> reorder_head(queue, (0, 1, 2))  # the identity: nothing to do
False
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["reorder_head"]


def reorder_head(queue: deque[Any], order: tuple[int, ...]) -> bool:
    """Move ``queue[i] for i in order`` to the front, in that order; return True if it moved.

    Every element not listed keeps its relative order; none is added or lost.  Costs
    O(max(order)) (the head is popped and pushed back; the rest of the queue is not
    touched) and nothing when ``order`` is the identity ``(0, 1, ..., k-1)`` or empty.

    Parameters
    ----------
    queue
        The queue, front first (a ``deque`` or subclass); changed in place.
    order
        Distinct indices into ``queue``, each ``0 <= i < len(queue)``.

    Raises
    ------
    ValueError
        An index is repeated or outside the queue (the queue is left unchanged).
    """
    if all(i == j for j, i in enumerate(order)):
        return False
    k = max(order) + 1
    if min(order) < 0 or k > len(queue) or len(set(order)) != len(order):
        raise ValueError(f"admission order {order!r} is not a set of distinct indices into a queue of {len(queue)}")
    popleft = queue.popleft
    head = [popleft() for _ in range(k)]
    chosen = set(order)
    ordered = [head[i] for i in order]
    ordered += [item for j, item in enumerate(head) if j not in chosen]
    queue.extendleft(reversed(ordered))
    return True
