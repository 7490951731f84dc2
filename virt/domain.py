"""The libvirt domain XML model: typed views on the lxml element tree.

A model object (Domain, Disk, Interface, ...) does not copy the document: it
wraps one lxml element, and each field is one declaration such as
`driver_cache = Attr("driver/@cache")` that reads and writes that element's
tree. So a parsed document is the lxml tree itself: what the model does not
know (elements, attributes, comments, their order) stays where it was, and
`to_xml()` is lxml serializing. Building a new object creates the elements
in libvirt's canonical order (each class's ORDER) from the same declarations.
The model holds no policy: which bus, driver or boot device a guest gets is
decided in virt/disk.py and virt/guest.py.

Fields of a parsed document are converted when read: a field whose text is
not what its type says raises InvalidParameter when read, and from_xml()
reads the domain's own numeric fields at once.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Iterable
from keyword import iskeyword
from typing import Any, ClassVar, NamedTuple

from lxml import etree

from virt.errors import InvalidParameter
from virt.objects import Flavor, GuestKind

# The namespace of the project's <metadata> child; libvirt keys metadata by it.
METADATA_NS = "http://virt-driver.org/xmlns/instance/1.0"
METADATA_PREFIX = "vd"
_MD = f"{{{METADATA_NS}}}"
_NSMAP = {METADATA_PREFIX: METADATA_NS}

# Blank text between elements is layout, not content; entities and network
# access are off because parsed XML may come from anywhere.
_PARSER = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)

_UNIT_KIB = {
    "b": 1 / 1024, "bytes": 1 / 1024,
    "kb": 1000 / 1024, "k": 1, "kib": 1,
    "mb": 1000**2 / 1024, "m": 1024, "mib": 1024,
    "gb": 1000**3 / 1024, "g": 1024**2, "gib": 1024**2,
    "tb": 1000**4 / 1024, "t": 1024**3, "tib": 1024**3,
}


def _parse_error(what: str) -> InvalidParameter:
    return InvalidParameter(f"domain XML: {what}")


def _localname(tag: str) -> str:
    return tag.rpartition("}")[2]


# --- converters: text in the document <-> Python value -------------------------


class Conv(NamedTuple):
    """How a field's text becomes a value and back; `expect` ends the error message.

    inline: dump as an expression around {}, which generated builders use
    instead of calling dump (a Python call per field otherwise).
    """

    load: Callable[[str], Any]
    dump: Callable[[Any], str]
    expect: str = ""
    inline: str = ""


def _yes_no(raw: str) -> bool:
    if raw not in ("yes", "no"):
        raise ValueError(raw)
    return raw == "yes"


def _on_off(raw: str) -> bool:
    if raw not in ("on", "off"):
        raise ValueError(raw)
    return raw == "on"


STR = Conv(str, str)
INT = Conv(int, str, "is not a whole number", "str({})")
YES_NO = Conv(_yes_no, lambda v: "yes" if v else "no", "is not yes or no",
              "('yes' if {} else 'no')")
ON_OFF = Conv(_on_off, lambda v: "on" if v else "off", "is not on or off",
              "('on' if {} else 'off')")
GUEST_KIND = Conv(GuestKind, lambda v: v.value, "is not hvm or pv", "{}.value")


def _load(conv: Conv, raw: str, what: str) -> Any:
    if conv is STR:
        return raw
    try:
        return conv.load(raw)
    except ValueError:
        raise _parse_error(f"{what} {raw!r} {conv.expect}") from None


# --- the tree operations every field shares -------------------------------------

_PATH_STEP = re.compile(r"(?:\{[^}]*\})?[^/{]+")


def _split(xpath: str) -> tuple[tuple[str, ...], str | None]:
    """'driver/@cache' -> (('driver',), 'cache'); 'name' -> (('name',), None)."""
    steps = _PATH_STEP.findall(xpath)
    if steps and steps[-1].startswith("@"):
        return tuple(steps[:-1]), steps[-1][1:]
    return tuple(steps), None


def _find(node: etree._Element, tags: tuple[str, ...]) -> etree._Element | None:
    for tag in tags:
        node = next(node.iterchildren(tag), None)  # twice as fast as find()'s ElementPath
        if node is None:
            return None
    return node


def _position(parent: etree._Element, tag: str, order: dict[str, int]) -> int | None:
    """Where a new child `tag` goes in libvirt's order; None: at the end."""
    rank = order.get(tag)
    if rank is None or len(parent) == 0 or order.get(parent[-1].tag, -1) <= rank:
        return None
    for index, child in enumerate(parent):
        if order.get(child.tag, -1) > rank:
            return index
    return None


def _new_child(parent: etree._Element, tag: str, order: dict[str, int],
               attrib: dict[str, str] | None = None, nsmap=None) -> etree._Element:
    index = _position(parent, tag, order)
    child = etree.SubElement(parent, tag, attrib, nsmap)
    if index is not None:
        parent.insert(index, child)
    return child


def _make(node: etree._Element, tags: tuple[str, ...], order: dict[str, int]) -> etree._Element:
    """The element at tags under node, created (in order at the first level) if missing."""
    for depth, tag in enumerate(tags):
        child = node.find(tag)
        if child is None:
            child = _new_child(node, tag, order if depth == 0 else {})
        node = child
    return node


def _prune(node: etree._Element, tags: tuple[str, ...]) -> None:
    """Remove the elements along tags that are left empty, deepest first."""
    chain = []
    element = node
    for tag in tags:
        element = element.find(tag)
        if element is None:
            break
        chain.append(element)
    for element in reversed(chain):
        if len(element) or element.attrib or (element.text or "").strip():
            return
        element.getparent().remove(element)


# --- field declarations ------------------------------------------------------------


class Field:
    """One field: where it lives in the element (an xpath such as 'driver/@cache').

    A path ending in @attr is an attribute, otherwise the element's text.
    The same declaration reads, writes and builds, so the three cannot drift.
    """

    conv: Conv = STR
    plain = True  # one attribute or the text of the element or of one child: built in a group

    def __init__(self, xpath: str, conv: Conv = STR, *, fixed: dict[str, str] | None = None):
        self.tags, self.attr = _split(xpath)
        self.conv = conv
        self.fixed = fixed or {}  # attributes written with the text, e.g. unit='KiB'
        self.name = ""
        self.what = ""

    def __set_name__(self, owner: type[Model], name: str) -> None:
        self.name = name
        words = [_localname(t) for t in ((owner.TAG,) if not self.tags else self.tags)]
        if self.tags and owner.TAG not in ("domain", ""):
            words.insert(0, _localname(owner.TAG))
        self.what = " ".join(words + ([self.attr] if self.attr else []))

    @property
    def first_tag(self) -> str | None:
        return self.tags[0] if self.tags else None

    @property
    def checked(self) -> bool:
        """Whether reading can fail (so from_element reads it at once)."""
        return self.conv is not STR

    def __get__(self, obj: Model | None, owner: type) -> Any:
        if obj is None:
            return self
        return self.read(obj.node)

    def __set__(self, obj: Model, value: Any) -> None:
        self.write(obj.node, type(obj)._rank, value)

    def read(self, node: etree._Element) -> Any:
        element = _find(node, self.tags)
        if element is None:
            return None
        raw = element.text or "" if self.attr is None else element.get(self.attr)
        return None if raw is None else _load(self.conv, raw, self.what)

    def write(self, node: etree._Element, order: dict[str, int], value: Any) -> None:
        if value is None:
            element = _find(node, self.tags)
            if element is not None:
                if self.attr is None:
                    element.text = None
                    for attr in self.fixed:  # unit='KiB' goes with its amount
                        element.attrib.pop(attr, None)
                else:
                    element.attrib.pop(self.attr, None)
                _prune(node, self.tags)
            return
        element = _make(node, self.tags, order)
        text = self.conv.dump(value)
        if self.attr is None:
            element.attrib.update(self.fixed)
            element.text = text
        else:
            element.set(self.attr, text)

    def build_source(self, src: _Source) -> list[str]:
        """Lines of a generated builder that build value `v` (not None) under the new
        element `node`; by default the field writes it (nothing there to find or replace).
        Subclasses emit direct lxml calls instead."""
        return [f"{src.ref(self)}.write(node, {{}}, v)"]


def Attr(xpath: str, conv: Conv = STR) -> Field:  # noqa: N802 (a declaration, read as a type)
    return Field(xpath, conv)


def Text(xpath: str, conv: Conv = STR) -> Field:  # noqa: N802
    return Field(xpath, conv)


class Memory(Field):
    """An amount in KiB: read in any libvirt unit, written as unit='KiB'."""

    def __init__(self, xpath: str):
        super().__init__(xpath, INT, fixed={"unit": "KiB"})

    def read(self, node: etree._Element) -> int | None:
        element = _find(node, self.tags)
        if element is None or element.text is None:
            return None
        unit = element.get("unit", "KiB").lower()
        if unit not in _UNIT_KIB:
            raise _parse_error(f"{self.what} unit {element.get('unit')!r} is unknown")
        return int(_load(INT, element.text or "", self.what) * _UNIT_KIB[unit])


class Flag(Field):
    """True when an (empty) element is present: <readonly/>, <acpi/>."""

    def read(self, node: etree._Element) -> bool:
        return _find(node, self.tags) is not None

    def write(self, node: etree._Element, order: dict[str, int], value: Any) -> None:
        element = _find(node, self.tags)
        if value and element is None:
            _make(node, self.tags, order)
        elif not value and element is not None:
            element.getparent().remove(element)


class ByType(Field):
    """An attribute whose name depends on the element's type: <source file|dev|bridge=...>."""

    plain = False

    def __init__(self, tag: str, names: dict[str, str]):
        super().__init__(tag)
        self.names = names

    def _attr(self, node: etree._Element) -> str | None:
        return self.names.get(node.get("type", ""))

    def read(self, node: etree._Element) -> str | None:
        attr = self._attr(node)
        element = _find(node, self.tags)
        return None if attr is None or element is None else element.get(attr)

    def write(self, node: etree._Element, order: dict[str, int], value: Any) -> None:
        attr = self._attr(node)
        if attr is None:
            if value is None:
                return
            raise InvalidParameter(
                f"{node.tag} type {node.get('type')!r} has no {self.name}: "
                f"use type {' or '.join(self.names)}")
        if value is None:
            element = _find(node, self.tags)
            if element is not None:
                element.attrib.pop(attr, None)
                _prune(node, self.tags)
        else:
            _make(node, self.tags, order).set(attr, value)

    def build_source(self, src: _Source) -> list[str]:
        attr = self.names.get(src.constants.get("type", ""))
        if attr is not None and _keyword(attr):  # the type is a default: <source file=...>
            return [f"SubElement(node, {self.tags[0]!r}, {attr}=v)"]
        kind = src.own.get("type", "''")
        return [f"a = {src.ref(self.names)}.get({kind})",
                f"if a is None: {src.ref(self)}.write(node, {{}}, v)  # refused there",
                f"else: SubElement(node, {self.tags[0]!r}, {{a: v}})"]


class AttrList(Field):
    """One attribute of repeated elements, as a list: <boot dev='hd'/><boot dev='cdrom'/>."""

    attr: str  # declared as 'tag/@attr', never the text
    plain = False

    def read(self, node: etree._Element) -> list[str]:
        return [e.get(self.attr, "") for e in node.iterchildren(self.tags[0])]

    def write(self, node: etree._Element, order: dict[str, int], value: Any) -> None:
        for element in list(node.iterchildren(self.tags[0])):
            node.remove(element)
        for item in value or ():
            _new_child(node, self.tags[0], order, {self.attr: item})

    def build_source(self, src: _Source) -> list[str]:
        attrib = f"{self.attr}=x" if _keyword(self.attr) else f"{{{self.attr!r}: x}}"
        return [f"for x in v: SubElement(node, {self.tags[0]!r}, {attrib})"]


class Child(Field):
    """A sub-element modelled by its own class: domain.os, domain.metadata."""

    plain = False

    def __init__(self, cls: type[Model], under: str = ""):
        super().__init__(f"{under}/{cls.TAG}" if under else cls.TAG)
        self.cls = cls
        self.under = self.tags[:-1]

    def read(self, node: etree._Element) -> Model | None:
        element = _find(node, self.tags)
        return None if element is None else self.cls.from_element(element)

    def write(self, node: etree._Element, order: dict[str, int], value: Any) -> None:
        old = _find(node, self.tags)
        if old is not None:
            old.getparent().remove(old)
        if value is None:
            _prune(node, self.under)
            return
        parent = _make(node, self.under, order)
        value._attach(parent, order if parent is node else {})

    def build_source(self, src: _Source) -> list[str]:
        if not self.under:
            return _place_source("v", "node")
        return [f"p = SubElement(node, {self.under[0]!r})", *_place_source("v", "p")]


class Children(Field):
    """Repeated sub-elements of one class, as a list: <listen>, <timer>, <seclabel>."""

    plain = False

    def __init__(self, cls: type[Model], under: str = ""):
        super().__init__(f"{under}/{cls.TAG}" if under else cls.TAG)
        self.cls = cls
        self.under = self.tags[:-1]

    def read(self, node: etree._Element) -> list:
        parent = _find(node, self.under)
        if parent is None:
            return []
        return [self.cls.from_element(e) for e in parent.iterchildren(self.tags[-1])]

    def write(self, node: etree._Element, order: dict[str, int], value: Any) -> None:
        parent = _find(node, self.under)
        if parent is not None:
            for element in list(parent.iterchildren(self.tags[-1])):
                parent.remove(element)
        if not value:
            _prune(node, self.under)
            return
        parent = _make(node, self.under, order)
        for item in value:
            item._attach(parent, order if parent is node else {})

    def build_source(self, src: _Source) -> list[str]:
        if len(self.under) > 1:
            return super().build_source(src)
        parent = "node"
        lines = ["if v:"]
        if self.under:  # another field may have made it: <source file=...><seclabel/>
            parent = "p"
            lines += [f"    p = node.find({self.under[0]!r})",
                      f"    if p is None: p = SubElement(node, {self.under[0]!r})"]
        lines.append("    for x in v:")
        return lines + [f"        {line}" for line in _place_source("x", parent)]


# --- the base of every model class ---------------------------------------------------


def _place_source(obj: str, parent: str) -> list[str]:
    """Lines of Model._attach(parent, {}) inlined: a pending object is built in place."""
    return [f"if {obj}._node is None:",
            f"    {obj}._node = {obj}._maker({parent}, {obj}._values)",
            f"else: {parent}.append({obj}._node)"]


class _Source:
    """Lines of a generated builder, and the objects its code refers to by name."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {"Element": etree.Element, "SubElement": etree.SubElement}
        self.own: dict[str, str] = {}  # the element's own attributes: name -> expression
        self.constants: dict[str, str] = {}  # those of them known when generating

    def ref(self, obj: Any) -> str:
        name = f"_{len(self.names)}"
        self.names[name] = obj
        return name

    def value(self, f: Field, given: set[str], defaults: dict[str, Any]) -> str | None:
        """An expression for the field's value; None when it is neither given nor defaulted."""
        if f.name in given:
            return f"values[{f.name!r}]"
        if defaults.get(f.name) is None:
            return None
        default = defaults[f.name]
        return f"{self.ref(default)}()" if isinstance(default, type) else self.ref(default)

    def dumped(self, f: Field, expr: str) -> str:
        if f.conv is STR:
            return expr
        return f.conv.inline.format(expr) if f.conv.inline else f"{self.ref(f.conv.dump)}({expr})"

    def attrs(self, fields: Iterable[Field], given: set[str], defaults: dict[str, Any],
              start: str = "{}") -> list[str]:
        """Lines filling dict `a` (from start) with the attributes among fields that have
        a value."""
        lines = [f"a = {start}"]
        for f in fields:
            expr = self.value(f, given, defaults)
            if expr is not None:
                lines += [f"v = {expr}", "if v is not None:",
                          f"    a[{f.attr!r}] = {self.dumped(f, 'v')}"]
        return lines


def _keyword(name: str | None) -> bool:
    """Whether an attribute can be passed to lxml as a literal keyword (about 15% faster
    than an attribute dict)."""
    return name is not None and name.isidentifier() and not iskeyword(name)


def _literal_keywords(src: _Source, text: Field | None, flag: Field | None,
                      attrs: list[Field], given: set[str],
                      defaults: dict[str, Any]) -> tuple[list[str], list[str]] | None:
    """(condition, keywords): the attributes as literal keywords of one lxml call, for
    when every given field has a value (the common case); None if a name cannot be one."""
    fixed = text.fixed if text is not None else {}
    if not all(_keyword(name) for name in (*fixed, *(f.attr for f in attrs))):
        return None
    condition, keywords = [], [f"{k}={v!r}" for k, v in fixed.items()]
    if text is not None and text.name in given:  # a default is never None
        condition.append("t is not None")
    if flag is not None and flag.name in given:
        condition.append("g")
    for index, f in enumerate(attrs):
        expr = src.value(f, given, defaults)
        assert expr is not None  # attrs holds the fields with a value only
        if f.name in given:
            src.lines.append(f"    v{index} = {expr}")
            condition.append(f"v{index} is not None")
            expr = f"v{index}"
        keywords.append(f"{f.attr}={src.dumped(f, expr)}")
    return condition, keywords


def _group_source(src: _Source, fields: list[Field], given: set[str],
                  defaults: dict[str, Any], exists: bool) -> None:
    """Code making one child element from its plain fields (text, attributes, flag)."""
    child = fields[0].tags[0]
    text = next((f for f in fields if f.attr is None and not isinstance(f, Flag)), None)
    flag = next((f for f in fields if isinstance(f, Flag)), None)
    if text is not None and src.value(text, given, defaults) is None:
        text = None
    if flag is not None and src.value(flag, given, defaults) is None:
        flag = None
    attrs = [f for f in fields if f.attr is not None and src.value(f, given, defaults)]
    if text is not None:
        src.lines.append(f"    t = {src.value(text, given, defaults)}")
    if flag is not None:
        src.lines.append(f"    g = {src.value(flag, given, defaults)}")
    literal = None if exists else _literal_keywords(src, text, flag, attrs, given, defaults)
    if literal is not None:
        condition, keywords = literal
        lines = [f"e = SubElement(node, {', '.join([repr(child), *keywords])})"]
        if text is not None:
            lines.append(f"e.text = {src.dumped(text, 't')}")
        if not condition:  # only defaults: always written
            src.lines += [f"    {line}" for line in lines]
            return
        src.lines.append(f"    if {' and '.join(condition)}:")
        src.lines += [f"        {line}" for line in lines]
        if len(condition) == 1 and (text is not None) + (flag is not None) + len(attrs) == 1:
            return  # its only value is missing: nothing to write
        src.lines.append("    else:")
    indent = "    " if literal is None else "        "
    # Some values are missing: the attributes that are there, in a dict.
    start = f"dict({src.ref(text.fixed)}) if t is not None else {{}}" \
        if text is not None and text.fixed else "{}"  # unit='KiB' first, as libvirt writes it
    lines = src.attrs(attrs, given, defaults, start)
    present = ["a", *(["t is not None"] if text else []), *(["g"] if flag else [])]
    lines.append(f"if {' or '.join(present)}:")
    if exists:  # a field built before made it already
        lines += [f"    e = node.find({child!r})",
                  f"    if e is None: e = SubElement(node, {child!r}, a)",
                  "    else: e.attrib.update(a)"]
    else:
        lines.append(f"    e = SubElement(node, {child!r}, a)")
    if text is not None:
        lines.append(f"    if t is not None: e.text = {src.dumped(text, 't')}")
    src.lines += [indent + line for line in lines]


class Model:
    """A view on one element. Subclasses declare TAG, ORDER and their fields.

    Model(**fields) builds a new element (lazily: built in place when it is
    attached to a parent, otherwise on first use); from_element() wraps an
    existing one. Equality compares the trees, whitespace-only text ignored.
    """

    TAG: ClassVar[str] = ""
    NSMAP: ClassVar[dict[str, str] | None] = None
    ORDER: ClassVar[tuple[str, ...]] = ()  # child tags in libvirt's canonical order
    DEFAULTS: ClassVar[dict[str, Any]] = {}  # written when building and not given
    _rank: ClassVar[dict[str, int]]
    _fields: ClassVar[dict[str, Field]]
    _checked: ClassVar[tuple[Field, ...]]  # the fields whose text may not convert
    _steps: ClassVar[tuple]
    _builders: ClassVar[dict[tuple[str, ...], Callable]]
    __slots__ = ("_node", "_maker", "_values")  # a pending object: _node None, made by
    # _maker(parent, _values) (a generated builder) when attached or first used
    __hash__ = None  # type: ignore[assignment]  # mutable

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._rank = {tag: i for i, tag in enumerate(cls.ORDER)}
        fields: dict[str, Field] = {}
        for klass in reversed(cls.__mro__):
            fields.update({k: v for k, v in vars(klass).items() if isinstance(v, Field)})
        cls._fields = fields
        cls._checked = tuple(f for f in fields.values() if f.checked)
        cls._steps = cls._plan(fields.values())
        cls._builders = {}

    @classmethod
    def _plan(cls, fields: Iterable[Field]) -> tuple:
        """Every field in build order: own attributes first, then per child element in
        libvirt's order, a list of the plain fields of that element or one other field."""
        own = [f for f in fields if not f.tags and f.plain and f.attr is not None]
        groups: dict[str, list[Field]] = {}
        steps: list[tuple[str | None, Any]] = []
        for f in fields:
            if f in own:
                continue
            if f.plain and len(f.tags) == 1:
                if f.tags[0] not in groups:
                    groups[f.tags[0]] = []
                    steps.append((f.tags[0], groups[f.tags[0]]))
                groups[f.tags[0]].append(f)
            else:
                steps.append((f.first_tag, f))
        steps.sort(key=lambda step: cls._rank.get(step[0] or "", len(cls.ORDER)))
        return (own, *(step for _, step in steps))

    @classmethod
    def _builder(cls, names: tuple[str, ...]) -> Callable:
        """build(parent, values) -> element, for these field names (cached per tuple).

        Generated once from the declarations, the way dataclasses generates
        __init__: straight-line lxml calls in libvirt's order, one call with
        literal keyword attributes per element when all its given values are
        there (a dict of those present otherwise), sub-objects built in place
        inline; within 1.3x of writing them by hand (benchmarks/bench_domain.py).
        """
        builder = cls._builders.get(names)
        if builder is None:
            builder = cls._builders[names] = cls._generate(names)
        return builder

    @classmethod
    def builder_source(cls, *names: str) -> str:
        """The code generated to build from these fields, to read or step through."""
        return cls._generate(names).__doc__ or ""

    @classmethod
    def _generate(cls, names: tuple[str, ...]) -> Callable:
        unknown = [name for name in names if name not in cls._fields]
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {unknown[0]!r}: "
                            f"use {', '.join(cls._fields)}")
        given, defaults = set(names), cls.DEFAULTS
        src = _Source()
        own, *plan = cls._steps
        tag, nsmap = src.ref(cls.TAG), src.ref(cls.NSMAP)
        src.lines.append("def build(parent, values):")
        own = [f for f in own if src.value(f, given, defaults) is not None]
        for f in own:
            value = src.value(f, given, defaults)
            assert f.attr is not None and value is not None  # _plan: own attributes only
            src.own[f.attr] = value
            if f.name not in given and f.conv is STR:
                src.constants[f.attr] = defaults[f.name]
        literal = _literal_keywords(src, None, None, own, given, defaults)
        if literal is not None:
            condition, given_keywords = literal
            keywords = ", ".join([*given_keywords, *([f"nsmap={nsmap}"] if cls.NSMAP else [])])
            keywords = keywords and f", {keywords}"
            if condition:
                src.lines.append(f"    if {' and '.join(condition)}:")
            indent = "        " if condition else "    "
            src.lines += [f"{indent}if parent is None: node = Element({tag}{keywords})",
                          f"{indent}else: node = SubElement(parent, {tag}{keywords})"]
        if literal is None or literal[0]:
            lines = src.attrs(own, given, defaults)
            lines += [f"if parent is None: node = Element({tag}, a, {nsmap})",
                      f"else: node = SubElement(parent, {tag}, a, {nsmap})"]
            indent = "    " if literal is None else "        "
            if literal is not None:
                src.lines.append("    else:")
            src.lines += [indent + line for line in lines]
        made: set[str] = set()
        for step in plan:
            fields = step if isinstance(step, list) else [step]
            if all(src.value(f, given, defaults) is None for f in fields):
                continue
            if not isinstance(step, list):
                src.lines += [f"    v = {src.value(step, given, defaults)}",
                              "    if v is not None:",
                              *(f"        {line}" for line in step.build_source(src))]
                made.add(step.first_tag)
                continue
            _group_source(src, step, given, defaults, step[0].tags[0] in made)
            made.add(step[0].tags[0])
        src.lines.append("    return node")
        namespace = dict(src.names)
        exec("\n".join(src.lines), namespace)  # noqa: S102 (code from our own declarations)
        build = namespace["build"]
        build.__doc__ = "\n".join(src.lines)
        return build

    def __init__(self, **values: Any):
        try:  # _builder() inlined: ~13 objects per guest
            builder = self._builders[tuple(values)]
        except KeyError:
            builder = self._builder(tuple(values))
        self._node: etree._Element | None = None
        self._maker = builder
        self._values = values

    @classmethod
    def from_element(cls, element: etree._Element):
        """The view on an existing element; its numeric and yes/no fields are read once."""
        obj = cls.__new__(cls)
        obj._node = element
        obj.check()
        return obj

    def check(self) -> None:
        """Read every field of this element whose text could be invalid."""
        node = self._node
        for f in self._checked:
            f.read(node)

    @property
    def node(self) -> etree._Element:
        """The lxml element this object views (built now if it was pending)."""
        if self._node is None:
            self._build(None)
        return self._node

    def _attach(self, parent: etree._Element, order: dict[str, int]) -> None:
        """Put this object's element under parent, in order; a pending one is built there."""
        index = _position(parent, self.TAG, order) if order else None
        if index is None:
            if self._node is None:
                self._build(parent)
            else:
                parent.append(self._node)
        else:
            parent.insert(index, self.node)

    def _build(self, parent: etree._Element | None) -> None:
        """Create the element (under parent: in place) from the pending values."""
        self._node = self._maker(parent, self._values)

    def to_element(self, parent: etree._Element | None = None) -> etree._Element:
        """The element; under parent (moved there) when given."""
        if parent is not None:
            self._attach(parent, {})
        return self.node

    def to_xml(self, pretty_print: bool = True) -> str:
        return etree.tostring(self.node, encoding="unicode", pretty_print=pretty_print)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return same_tree(self.node, other.node)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_xml(pretty_print=False)!r})"


def _blank(text: str | None) -> str | None:
    return None if text is None or not text.strip() else text


def same_tree(a: etree._Element, b: etree._Element) -> bool:
    """Same tags, attributes, text and children in order; whitespace-only text ignored."""
    if a.tag != b.tag or dict(a.attrib) != dict(b.attrib) or _blank(a.text) != _blank(b.text):
        return False
    if len(a) != len(b):
        return False
    return all(same_tree(x, y) and _blank(x.tail) == _blank(y.tail)
               for x, y in zip(a, b, strict=True))


class RawXML(Model):
    """An element the model has no class for (a controller, a memballoon), kept whole."""

    __slots__ = ()

    def __init__(self, xml: str):
        self._node = etree.fromstring(xml, _PARSER)

    @property
    def tag(self) -> str:
        return self.node.tag

    @property
    def xml(self) -> str:
        return etree.tostring(self.node, encoding="unicode", with_tail=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RawXML):
            return NotImplemented
        return same_tree(self.node, other.node)


# --- the project's metadata -----------------------------------------------------------


class _FlavorField(Field):
    """<vd:flavor name= memory_mb= vcpus= root_gb=/> as a Flavor."""

    plain = False

    _INTS = ("memory_mb", "vcpus", "root_gb")
    checked = True

    def read(self, node: etree._Element) -> Flavor | None:
        element = _find(node, self.tags)
        if element is None:
            return None
        ints = {k: _load(INT, element.get(k, "0"), f"flavor {k}") for k in self._INTS}
        return Flavor(name=element.get("name", ""), **ints)

    def write(self, node: etree._Element, order: dict[str, int], value: Any) -> None:
        old = _find(node, self.tags)
        if old is not None:
            node.remove(old)
        if value is not None:
            _new_child(node, self.tags[0], order, {
                "name": value.name, "memory_mb": str(value.memory_mb),
                "vcpus": str(value.vcpus), "root_gb": str(value.root_gb)})

    def build_source(self, src: _Source) -> list[str]:
        return [f"SubElement(node, {self.tags[0]!r}, name=v.name, memory_mb=str(v.memory_mb), "
                "vcpus=str(v.vcpus), root_gb=str(v.root_gb))"]


class _ParamsField(Field):
    """<vd:param name='key'>value</vd:param>, one per key, as a dict (written sorted)."""

    plain = False

    def read(self, node: etree._Element) -> dict[str, str]:
        return {e.get("name"): e.text or "" for e in node.iterchildren(self.tags[0])
                if e.get("name")}

    def write(self, node: etree._Element, order: dict[str, int], value: Any) -> None:
        for element in list(node.iterchildren(self.tags[0])):
            node.remove(element)
        for key, text in sorted((value or {}).items()):
            _new_child(node, self.tags[0], order, {"name": key}).text = text

    def build_source(self, src: _Source) -> list[str]:
        return ["for k, x in sorted(v.items()):",
                f"    SubElement(node, {self.tags[0]!r}, name=k).text = x"]


class InstanceMetadata(Model):
    """The project's own metadata: enough to rebuild the Instance from a domain.

    owner: who manages the domain (see LibvirtDriver.owner); None in domains
    written by version 0.1.
    """

    TAG = _MD + "instance"
    NSMAP = _NSMAP
    ORDER = tuple(_MD + t for t in ("owner", "uuid", "flavor", "image", "kind", "param"))
    __slots__ = ()
    owner = Text(_MD + "owner")
    instance_uuid = Text(_MD + "uuid")
    flavor = _FlavorField(_MD + "flavor")
    image = Text(_MD + "image")
    kind = Text(_MD + "kind", GUEST_KIND)
    params = _ParamsField(_MD + "param")


# --- <os>, <features>, <clock>, <seclabel> --------------------------------------------


class OS(Model):
    """<os>: guest type, firmware or kernel, and boot devices."""

    TAG = "os"
    ORDER = ("type", "firmware", "init", "loader", "nvram", "kernel", "initrd", "cmdline",
             "dtb", "root", "acpi", "boot", "bootmenu", "smbios", "bios")
    DEFAULTS = {"type": "hvm"}
    __slots__ = ()
    firmware = Attr("@firmware")  # efi or bios: libvirt picks loader and nvram
    type = Text("type")  # hvm, xen or linux (Xen PV)
    arch = Attr("type/@arch")
    machine = Attr("type/@machine")
    loader = Text("loader")
    loader_type = Attr("loader/@type")  # rom or pflash
    loader_readonly = Attr("loader/@readonly", YES_NO)
    loader_secure = Attr("loader/@secure", YES_NO)
    nvram = Text("nvram")
    nvram_template = Attr("nvram/@template")
    kernel = Text("kernel")
    initrd = Text("initrd")
    cmdline = Text("cmdline")
    dtb = Text("dtb")
    boot_devices = AttrList("boot/@dev")  # hd, cdrom, network, fd
    bootmenu = Attr("bootmenu/@enable", YES_NO)


class Features(Model):
    """<features>: the platform flags the project sets; others stay in the tree."""

    TAG = "features"
    ORDER = ("acpi", "apic", "pae", "hap", "viridian", "privnet", "hyperv", "kvm", "xen",
             "pvspinlock", "capabilities", "pmu", "vmport", "gic", "smm", "ioapic", "hpt")
    __slots__ = ()
    acpi = Flag("acpi")
    apic = Flag("apic")
    pae = Flag("pae")
    hap = Flag("hap")
    pmu = Attr("pmu/@state", ON_OFF)
    vmport = Attr("vmport/@state", ON_OFF)


class Timer(Model):
    """<timer name='rtc' tickpolicy='catchup' present='yes'/>."""

    TAG = "timer"
    __slots__ = ()
    name = Attr("@name")
    tickpolicy = Attr("@tickpolicy")
    track = Attr("@track")
    present = Attr("@present", YES_NO)


class Clock(Model):
    """<clock offset='utc|localtime|timezone|variable'> and its timers."""

    TAG = "clock"
    ORDER = ("timer",)
    DEFAULTS = {"offset": "utc"}
    __slots__ = ()
    offset = Attr("@offset")
    timezone = Attr("@timezone")  # with offset='timezone'
    basis = Attr("@basis")  # with offset='variable': utc or localtime
    adjustment = Attr("@adjustment")
    timers = Children(Timer)


class SecLabel(Model):
    """<seclabel>: of the domain, or of one disk's source (then relabel and label only)."""

    TAG = "seclabel"
    ORDER = ("label", "imagelabel", "baselabel")
    __slots__ = ()
    type = Attr("@type")  # dynamic, static, none
    model = Attr("@model")  # selinux, apparmor, dac
    relabel = Attr("@relabel", YES_NO)
    label = Text("label")
    imagelabel = Text("imagelabel")
    baselabel = Text("baselabel")


# --- devices --------------------------------------------------------------------------


class Disk(Model):
    """<disk type='file|block|...' device='disk|cdrom|...'>.

    source: the file of a file disk, the device of a block disk (None for
    other types, whose source_* fields say more).
    """

    TAG = "disk"
    ORDER = ("driver", "auth", "source", "backingStore", "backenddomain", "geometry",
             "blockio", "mirror", "target", "iotune", "readonly", "shareable", "transient",
             "serial", "wwn", "vendor", "product", "encryption", "boot", "alias", "address")
    DEFAULTS = {"type": "file", "device": "disk"}
    __slots__ = ()
    type = Attr("@type")
    device = Attr("@device")
    driver_name = Attr("driver/@name")
    driver_type = Attr("driver/@type")
    driver_cache = Attr("driver/@cache")
    driver_io = Attr("driver/@io")
    driver_discard = Attr("driver/@discard")  # unmap or ignore
    driver_detect_zeroes = Attr("driver/@detect_zeroes")
    driver_error_policy = Attr("driver/@error_policy")
    driver_rerror_policy = Attr("driver/@rerror_policy")
    driver_iothread = Attr("driver/@iothread", INT)
    driver_event_idx = Attr("driver/@event_idx", ON_OFF)
    driver_copy_on_read = Attr("driver/@copy_on_read", ON_OFF)
    source = ByType("source", {"file": "file", "block": "dev"})
    source_dir = Attr("source/@dir")
    source_protocol = Attr("source/@protocol")
    source_name = Attr("source/@name")
    source_pool = Attr("source/@pool")
    source_volume = Attr("source/@volume")
    source_seclabels = Children(SecLabel, "source")
    target_dev = Attr("target/@dev")
    target_bus = Attr("target/@bus")
    readonly = Flag("readonly")
    shareable = Flag("shareable")
    serial = Text("serial")
    boot_order = Attr("boot/@order", INT)


class VirtualPort(Model):
    """<virtualport type='openvswitch'><parameters interfaceid=.../></virtualport>."""

    TAG = "virtualport"
    __slots__ = ()
    type = Attr("@type")  # openvswitch, 802.1Qbh, 802.1Qbg, midonet
    interface_id = Attr("parameters/@interfaceid")
    profile_id = Attr("parameters/@profileid")


class PortRange(Model):
    """<range start='2022' to='22'/> of a passt port forward."""

    TAG = "range"
    __slots__ = ()
    start = Attr("@start", INT)
    end = Attr("@end", INT)
    to = Attr("@to", INT)
    exclude = Attr("@exclude", YES_NO)


class PortForward(Model):
    """<portForward proto='tcp' address=... dev=...>: host ports a passt backend forwards."""

    TAG = "portForward"
    ORDER = ("range",)
    __slots__ = ()
    proto = Attr("@proto")
    address = Attr("@address")
    dev = Attr("@dev")
    ranges = Children(PortRange)


class Interface(Model):
    """<interface type='bridge|network|user|ethernet|direct|...'>.

    source: the bridge, network or (direct) host device the type connects to.
    """

    TAG = "interface"
    ORDER = ("mac", "source", "virtualport", "ip", "route", "portForward", "script",
             "backenddomain", "target", "guest", "model", "driver", "backend", "filterref",
             "tune", "teaming", "bandwidth", "vlan", "link", "mtu", "coalesce", "boot", "rom",
             "acpi", "alias", "address")
    __slots__ = ()
    type = Attr("@type")
    mac = Attr("mac/@address")
    source = ByType("source", {"bridge": "bridge", "network": "network", "direct": "dev"})
    source_mode = Attr("source/@mode")
    virtualport = Child(VirtualPort)
    port_forwards = Children(PortForward)
    target_dev = Attr("target/@dev")  # the host's tap device (type ethernet: created or given)
    target_managed = Attr("target/@managed", YES_NO)
    model = Attr("model/@type")
    backend_type = Attr("backend/@type")  # passt: user networking without root
    backend_log_file = Attr("backend/@logFile")
    link_state = Attr("link/@state")
    mtu = Attr("mtu/@size", INT)


class Listen(Model):
    """<listen type='address|network|socket|none'> of a graphics device."""

    TAG = "listen"
    __slots__ = ()
    type = Attr("@type")
    address = Attr("@address")
    network = Attr("@network")
    socket = Attr("@socket")


class Graphics(Model):
    """<graphics type='vnc|spice|...'>: a fixed port, or autoport, or a socket."""

    TAG = "graphics"
    ORDER = ("listen", "channel", "image", "jpeg", "zlib", "playback", "streaming",
             "clipboard", "mouse", "filetransfer", "gl", "audio")
    DEFAULTS = {"type": "vnc"}
    __slots__ = ()
    type = Attr("@type")
    port = Attr("@port", INT)
    autoport = Attr("@autoport", YES_NO)
    listen = Attr("@listen")
    passwd = Attr("@passwd")
    keymap = Attr("@keymap")
    socket = Attr("@socket")
    listens = Children(Listen)


class _CharDevice(Model):
    """<serial>, <console> or <channel>; path: the source file, pty or socket.

    log_file: <log file=...>, a copy of the output that survives restarts
    (libvirt truncates a file-type device's path at every start) when
    log_append is on.
    """

    ORDER = ("source", "log", "protocol", "target", "alias", "address")
    DEFAULTS = {"type": "pty"}
    __slots__ = ()
    type = Attr("@type")
    path = Attr("source/@path")
    source_mode = Attr("source/@mode")
    log_file = Attr("log/@file")
    log_append = Attr("log/@append", ON_OFF)
    target_type = Attr("target/@type")
    target_port = Attr("target/@port", INT)
    target_model = Attr("target/model/@name")


class Serial(_CharDevice):
    TAG = "serial"
    __slots__ = ()


class Console(_CharDevice):
    TAG = "console"
    __slots__ = ()


class Channel(_CharDevice):
    """<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/>."""

    TAG = "channel"
    DEFAULTS = {"type": "unix"}
    __slots__ = ()
    target_name = Attr("target/@name")
    target_state = Attr("target/@state")


class Input(Model):
    """<input type='tablet' bus='usb'> and other pointing devices."""

    TAG = "input"
    DEFAULTS = {"type": "tablet", "bus": "usb"}
    __slots__ = ()
    type = Attr("@type")
    bus = Attr("@bus")


class Video(Model):
    """<video><model type=... vram=... heads=...><acceleration/></model></video>."""

    TAG = "video"
    ORDER = ("driver", "model", "alias", "address")
    __slots__ = ()
    model = Attr("model/@type")
    vram = Attr("model/@vram", INT)
    vgamem = Attr("model/@vgamem", INT)
    heads = Attr("model/@heads", INT)
    primary = Attr("model/@primary", YES_NO)
    accel3d = Attr("model/acceleration/@accel3d", YES_NO)
    accel2d = Attr("model/acceleration/@accel2d", YES_NO)


class Rng(Model):
    """<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>."""

    TAG = "rng"
    __slots__ = ()
    model = Attr("@model")
    backend_model = Attr("backend/@model")
    backend = Text("backend")


Device = Disk | Interface | Graphics | Serial | Console | Channel | Input | Video | Rng | RawXML

_DEVICE_CLASSES: dict[str, type[Model]] = {
    cls.TAG: cls
    for cls in (Disk, Interface, Graphics, Serial, Console, Channel, Input, Video, Rng)}


def _device(element: etree._Element) -> Model:
    return _DEVICE_CLASSES.get(element.tag, RawXML).from_element(element)


class _DevicesField(Field):
    """<devices>: every child as its model class (RawXML when there is none), in order."""

    plain = False

    def read(self, node: etree._Element) -> list:
        devices = node.find("devices")
        if devices is None:
            return []
        return [_device(e) for e in devices if isinstance(e.tag, str)]

    def write(self, node: etree._Element, order: dict[str, int], value: Any) -> None:
        devices = node.find("devices")
        if devices is None:
            devices = _new_child(node, "devices", order)
        for element in [e for e in devices if isinstance(e.tag, str)]:
            devices.remove(element)
        for device in value or ():
            device._attach(devices, {})

    def build_source(self, src: _Source) -> list[str]:
        return ["p = SubElement(node, 'devices')", "for x in v:",
                *(f"    {line}" for line in _place_source("x", "p"))]


class Domain(Model):
    """<domain>: the whole guest. Memory in KiB, the unit libvirt reports."""

    TAG = "domain"
    ORDER = ("name", "uuid", "genid", "title", "description", "metadata", "maxMemory",
             "memory", "currentMemory", "blkiotune", "memtune", "memoryBacking", "vcpu",
             "vcpus", "iothreads", "iothreadids", "cputune", "numatune", "resource",
             "sysinfo", "bootloader", "bootloader_args", "os", "idmap", "features", "cpu",
             "clock", "on_poweroff", "on_reboot", "on_crash", "on_lockfailure", "pm", "perf",
             "devices", "seclabel", "keywrap", "launchSecurity")
    DEFAULTS = {"vcpus": 1, "os": OS, "devices": list}
    __slots__ = ()
    type = Attr("@type")
    id = Attr("@id", INT)  # set by libvirt on a running domain
    name = Text("name")
    uuid = Text("uuid")
    title = Text("title")
    description = Text("description")
    metadata = Child(InstanceMetadata, under="metadata")
    memory_kib = Memory("memory")
    memory_dump_core = Attr("memory/@dumpCore", ON_OFF)
    current_memory_kib = Memory("currentMemory")
    vcpus = Text("vcpu", INT)
    vcpu_placement = Attr("vcpu/@placement")  # static or auto
    vcpu_cpuset = Attr("vcpu/@cpuset")  # host CPUs the vCPUs may run on: '0-3,^2'
    vcpu_current = Attr("vcpu/@current", INT)  # vCPUs online at boot, of `vcpus`
    bootloader = Text("bootloader")
    bootloader_args = Text("bootloader_args")
    os = Child(OS)
    features = Child(Features)
    clock = Child(Clock)
    on_poweroff = Text("on_poweroff")
    on_reboot = Text("on_reboot")
    on_crash = Text("on_crash")
    devices = _DevicesField("devices")
    seclabels = Children(SecLabel)

    @classmethod
    def from_xml(cls, text: str | bytes) -> Domain:
        """Parse a domain document, such as libvirt's XMLDesc() of a domain."""
        data = text.encode() if isinstance(text, str) else text
        try:
            element = etree.fromstring(data, _PARSER)
        except etree.XMLSyntaxError as exc:
            raise _parse_error(f"not well-formed: {exc}") from None
        if element.tag != "domain":
            raise _parse_error(f"root element is <{element.tag}>, not <domain>")
        return cls.from_element(element)

    def devices_of(self, kind: builtins.type[Model]) -> list:
        """The devices of one class, in document order: domain.devices_of(Disk)."""
        devices = self.node.find("devices")
        if devices is None:
            return []
        return [kind.from_element(e) for e in devices.iterchildren(kind.TAG)]

    def add_device(self, device: Model) -> None:
        """Append a device to <devices> (created if missing)."""
        devices = self.node.find("devices")
        if devices is None:
            devices = _new_child(self.node, "devices", self._rank)
        device._attach(devices, {})
