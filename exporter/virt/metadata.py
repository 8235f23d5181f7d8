"""Descriptive labels from a domain's ``<metadata>`` (https://libvirt.org/formatdomain.html#general-metadata), for
one info metric only. Pure.

Applications put their own namespaced XML there; OpenStack Nova writes ``<nova:instance>`` (namespace
``http://openstack.org/xmlns/libvirt/nova/1.1``, 1.0 before Ocata) with ``<nova:flavor name=...>`` and
``<nova:owner><nova:project uuid=...>name</nova:project>``. The metadata is flattened once per domain definition
into ``(path, value)`` pairs, a path being ElementTree's ``{namespace}tag/{namespace}tag`` with ``@attribute`` for
an attribute's value. The operator maps label names to paths with ``--collector.libvirt.metadata-labels``
(comma-separated ``label=path`` entries, or ``nova`` for ``nova_project`` and ``nova_flavor``); nothing is exported
unless asked. Bounded: at most ``MAX_LABELS`` labels, ``MAX_PAIRS`` pairs per domain, values cut at ``MAX_VALUE``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

MAX_LABELS = 8
MAX_PAIRS = 64
MAX_VALUE = 128

_NOVA = ("http://openstack.org/xmlns/libvirt/nova/1.1", "http://openstack.org/xmlns/libvirt/nova/1.0")
PRESETS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "nova": (("nova_project", tuple(f"{{{ns}}}instance/{{{ns}}}owner/{{{ns}}}project" for ns in _NOVA)),
             ("nova_flavor", tuple(f"{{{ns}}}instance/{{{ns}}}flavor@name" for ns in _NOVA))),
}
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
RESERVED = {"domain", "uuid"}


class MetadataLabelError(ValueError):
    """The label mapping option cannot be used; the message names the entry."""


@dataclass(frozen=True)
class LabelMap:
    """Label name -> the paths to try, in order (the first one the domain has wins)."""

    labels: tuple[tuple[str, tuple[str, ...]], ...]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.labels]

    def values(self, metadata: tuple[tuple[str, str], ...]) -> list[str]:
        found = dict(metadata)
        return [next((found[p] for p in paths if p in found), "") for _, paths in self.labels]


def parse_label_map(text: str) -> LabelMap:
    """``nova,team={urn:example}owner/{urn:example}team`` -> LabelMap; MetadataLabelError naming the bad entry."""
    labels: list[tuple[str, tuple[str, ...]]] = []
    for entry in (e.strip() for e in text.split(",")):
        if entry in PRESETS:
            labels.extend(PRESETS[entry])
            continue
        name, sep, path = entry.partition("=")
        if not sep or not path.strip():
            raise MetadataLabelError(f"{entry!r}: expected label=path or one of {', '.join(PRESETS)}")
        labels.append((name.strip(), (path.strip(),)))
    names = [n for n, _ in labels]
    for name in names:
        if not _LABEL.match(name) or name.startswith("__") or name in RESERVED:
            raise MetadataLabelError(f"{name!r}: not a usable Prometheus label name")
    if len(set(names)) != len(names):
        raise MetadataLabelError("a label name is given twice")
    if len(labels) > MAX_LABELS:
        raise MetadataLabelError(f"{len(labels)} labels: at most {MAX_LABELS}")
    return LabelMap(tuple(labels))


def flatten(metadata: ET.Element | None) -> tuple[tuple[str, str], ...]:
    """``(path, value)`` for every element text and attribute under ``<metadata>``, at most MAX_PAIRS."""
    if metadata is None:
        return ()
    pairs: list[tuple[str, str]] = []
    stack = [(child, child.tag) for child in reversed(metadata)]  # depth-first, document order, no recursion
    while stack and len(pairs) < MAX_PAIRS:
        elem, path = stack.pop()
        pairs.extend((f"{path}@{attr}", value[:MAX_VALUE]) for attr, value in elem.attrib.items())
        text = (elem.text or "").strip()
        if text:
            pairs.append((path, text[:MAX_VALUE]))
        stack.extend((child, f"{path}/{child.tag}") for child in reversed(elem))
    return tuple(pairs[:MAX_PAIRS])
