"""Fixtures shared by the unit tests."""

from __future__ import annotations

import libvirt
import pytest


@pytest.fixture
def test_conn():
    """libvirt's built-in test driver; it accepts domain types kvm, qemu and xen as given."""
    conn = libvirt.open("test:///default")
    yield conn
    conn.close()
