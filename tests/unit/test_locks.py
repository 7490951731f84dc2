"""virt.locks: one holder at a time among threads and processes, oslo.concurrency's included."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

from virt.locks import external_lock


def test_threads_take_the_lock_one_at_a_time(tmp_path):
    inside, most = [0], [0]

    def work():
        for _ in range(50):
            with external_lock(str(tmp_path / "locks"), "name"):
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                time.sleep(0.0005)
                inside[0] -= 1
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1
    assert (tmp_path / "locks" / "name").exists()


def _holder(code: str) -> subprocess.Popen:
    """A process that takes a lock by `code`, prints "held" and keeps it until told."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


def _waits_for(proc: subprocess.Popen, lock_path: str, name: str) -> None:
    taken = threading.Event()

    def take():
        with external_lock(lock_path, name):
            taken.set()
    t = threading.Thread(target=take)
    t.start()
    assert not taken.wait(0.5)      # the other process holds it
    proc.communicate("done\n", timeout=60)
    t.join(60)
    assert taken.is_set()


def test_a_lock_held_by_oslo_concurrency_in_another_process_is_waited_for(tmp_path):
    lock_path = str(tmp_path)
    proc = _holder(f"""
        from oslo_concurrency import lockutils
        with lockutils.lock("virt-driver-image-x", external=True, lock_path={lock_path!r}):
            print("held", flush=True)
            input()
    """)
    _waits_for(proc, lock_path, "virt-driver-image-x")


def test_a_lock_held_by_another_process_of_ours_is_waited_for(tmp_path):
    lock_path = str(tmp_path)
    proc = _holder(f"""
        from virt.locks import external_lock
        with external_lock({lock_path!r}, "n"):
            print("held", flush=True)
            input()
    """)
    _waits_for(proc, lock_path, "n")
