"""The .pxd files beside the hot modules give their classes' fields C types for the
compiled build; the sources hold the same fields in ``__slots__``. They must agree,
or the compiled build (a missing field) or the pure one (a missing slot) breaks: checked
here in either mode, from the .pxd texts and the classes' ``__slots__``, one line of
inheritance at a time (a base's .pxd may hold its subclasses' fields: FlowControl
holds HttpProtocol's)."""

import importlib
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "prefork"

_CLASS = re.compile(r"^cdef class (\w+)(?:\((\w+)\))?:")
_FIELDS = re.compile(r"^\s+cdef public \w+\s+(.+)$")


def _declared() -> dict[str, tuple[str, str | None, set[str]]]:
    """class name -> (its module, its base's name or None, the fields its .pxd declares)."""
    found: dict[str, tuple[str, str | None, set[str]]] = {}
    for pxd in PACKAGE.rglob("*.pxd"):
        module = "prefork." + ".".join(pxd.relative_to(PACKAGE).with_suffix("").parts)
        current = None
        for line in pxd.read_text().splitlines():
            if m := _CLASS.match(line):
                current = m.group(1)
                found[current] = (module, m.group(2), set())
            elif (f := _FIELDS.match(line)) and current:
                found[current][2].update(name.strip() for name in f.group(1).split(","))
    return found


def _lines(declared) -> list[list[str]]:
    """The lines of inheritance among the declared classes, each from its root to a leaf."""
    children: dict[str | None, list[str]] = {}
    for name, (_, base, _) in declared.items():
        children.setdefault(base, []).append(name)

    def walk(name):
        subs = children.get(name, [])
        return [[name]] if not subs else [[name] + rest for sub in subs for rest in walk(sub)]

    return [line for root in children.get(None, []) for line in walk(root)]


def test_the_pxd_fields_are_the_slots_of_the_source():
    declared = _declared()
    assert {"Parser", "HttpProtocol", "BaseDriver", "Connection", "Request", "AsgiResponse"} <= set(declared)
    checked = 0
    for line in _lines(declared):
        classes = [getattr(importlib.import_module(declared[n][0]), n) for n in line]
        if not all("__slots__" in vars(c) for c in classes):
            continue  # a class with a __dict__ in the source (HttpContext): the compiled tests tell
        fields = set().union(*(declared[n][2] for n in line))
        slots = set().union(*(set(vars(c)["__slots__"]) for c in classes))
        assert fields == slots, (f"{' -> '.join(line)}: only in the .pxd: {sorted(fields - slots)}, "
                                 f"only in __slots__: {sorted(slots - fields)}")
        checked += 1
    assert checked >= 5
