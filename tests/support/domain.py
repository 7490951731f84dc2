"""Domain XML checks for tests: libvirt's RelaxNG schema, test:///default, canonical form."""

from __future__ import annotations

import functools

import libvirt
import pytest
from lxml import etree


def canonical(xml: bytes | str) -> bytes:
    """C14N of a document with whitespace-only text and tails dropped."""
    data = xml.encode() if isinstance(xml, str) else xml
    root = etree.fromstring(data, _RAW)
    for element in root.iter():
        if element.text is not None and not element.text.strip():
            element.text = None
        if element.tail is not None and not element.tail.strip():
            element.tail = None
    return etree.tostring(root, method="c14n")


def assert_valid(xml: str) -> None:
    """Validate against libvirt's own RelaxNG schema, with its complaint on failure."""
    schema = _schema()
    if not schema.validate(etree.fromstring(xml.encode())):
        pytest.fail(f"not valid per {SCHEMA}:\n{schema.error_log}\n{xml}")


def assert_accepted(xml: str) -> None:
    """Valid per libvirt's schema, and defined (then undefined) in test:///default."""
    assert_valid(xml)
    dom = _shared_test_conn().defineXML(xml)
    dom.undefine()


def define(conn, xml: str):
    """Define in test:///default and return the domain; the caller undefines."""
    return conn.defineXML(xml)


SCHEMA = "/usr/share/libvirt/schemas/domain.rng"


@functools.cache
def _schema() -> etree.RelaxNG:
    return etree.RelaxNG(file=SCHEMA)


@functools.cache
def _shared_test_conn() -> libvirt.virConnect:
    return libvirt.open("test:///default")


_RAW = etree.XMLParser(resolve_entities=False, no_network=True)
