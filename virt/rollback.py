"""Taking back the done steps of a multi-step operation that failed.

An operation pushes an undo for each step right after the step succeeded,
so a failure at any step undoes exactly the steps before it, newest first.
An undo that fails is logged and the rest still run: the caller sees the
operation's own error, never the undo's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

LOG = logging.getLogger(__name__)


class Rollback:
    """Undo steps, newest first, run when the `with` block raises (or by undo_all())."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, undo: Callable[[], object]) -> None:
        """Remember how to take back the step just done; `what` names it in the log."""
        self._steps.append((what, undo))

    def undo_all(self) -> None:
        """Run every undo once, newest first; one that fails does not stop the others."""
        steps, self._steps = self._steps, []
        for what, undo in reversed(steps):
            try:
                undo()
            except Exception as exc:  # keep undoing: every other step still matters
                LOG.error("could not undo %s: %s", what, exc)

    def __enter__(self) -> Rollback:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.undo_all()
