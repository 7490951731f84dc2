"""Rollback: a failure at any step undoes exactly the steps before it, newest first."""

import logging

import pytest

from virt.rollback import Rollback

STEPS = ("directory", "disk", "definition", "start")


class StepFailed(Exception):
    pass


def operation(fail_at: str | None, journal: list[str], failing_undo: str | None = None):
    """Four steps, each pushing its undo once done; `fail_at` raises instead of doing it."""
    with Rollback() as undo:
        for step in STEPS:
            if step == fail_at:
                raise StepFailed(f"{step} failed")
            journal.append(f"do {step}")

            def take_back(step=step):
                if step == failing_undo:
                    raise OSError(f"cannot undo {step}")
                journal.append(f"undo {step}")
            undo.push(step, take_back)


@pytest.mark.parametrize("failing", range(len(STEPS)))
def test_a_failure_at_each_step_undoes_exactly_the_earlier_steps_in_reverse(failing):
    journal = []
    with pytest.raises(StepFailed, match=f"{STEPS[failing]} failed"):
        operation(STEPS[failing], journal)
    done = STEPS[:failing]
    assert journal == [f"do {s}" for s in done] + [f"undo {s}" for s in reversed(done)]


def test_success_undoes_nothing():
    journal = []
    operation(None, journal)
    assert journal == [f"do {s}" for s in STEPS]


def test_a_failing_undo_is_logged_and_neither_hides_the_error_nor_stops_the_rest(caplog):
    journal = []
    with caplog.at_level(logging.ERROR, logger="virt.rollback"), \
            pytest.raises(StepFailed, match="start failed"):
        operation("start", journal, failing_undo="disk")
    assert journal == ["do directory", "do disk", "do definition",
                       "undo definition", "undo directory"]
    assert [r.getMessage() for r in caplog.records] == ["could not undo disk: cannot undo disk"]


def test_undo_all_runs_each_step_once():
    journal = []
    rollback = Rollback()
    rollback.push("a", lambda: journal.append("a"))
    rollback.push("b", lambda: journal.append("b"))
    rollback.undo_all()
    rollback.undo_all()
    assert journal == ["b", "a"]


def test_an_interrupt_also_rolls_back():
    journal = []
    with pytest.raises(KeyboardInterrupt), Rollback() as undo:
        undo.push("a", lambda: journal.append("a"))
        raise KeyboardInterrupt
    assert journal == ["a"]
