"""Which versions a change is checked against under a subject's mode, and in which direction.

Backward: the new schema must read data written under the old one (reader = new); forward:
the old must read the new (reader = old); full: both. Non-transitive modes compare with the
active version only, transitive ones with every version ever accepted. A change of format
(JSON Schema <-> Avro) is always reported: the two cannot be compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from eventward._internal.schema import compat_avro, compat_json
from eventward._internal.schema.compiled import CompiledSchema
from eventward._internal.schema.model import Finding, Mode


def reader_accepts(reader: CompiledSchema, writer: CompiledSchema) -> list[Finding]:
    """Breaks found when ``reader`` reads data written under ``writer`` (same format)."""
    if reader.fmt == "json":
        return compat_json.reader_accepts(reader.tree, writer.tree)
    return compat_avro.reader_accepts(reader.tree, writer.tree)


def check(
    mode: Mode, new: CompiledSchema, accepted: Sequence[tuple[int, CompiledSchema]]
) -> tuple[tuple[int, ...], list[Finding]]:
    """(versions compared, every finding) for ``new`` against the ``accepted`` history (oldest first)."""
    if mode is Mode.NONE or not accepted:
        return (), []
    targets = accepted if mode.transitive else accepted[-1:]
    findings: list[Finding] = []
    for version, old in targets:
        if old.fmt != new.fmt:
            findings.append(
                Finding(
                    "$",
                    "format_changed",
                    f"format changed from {old.fmt} to {new.fmt}",
                    "backward" if mode.backward else "forward",
                    version,
                )
            )
            continue
        if mode.backward:
            findings += [replace(f, direction="backward", against=version) for f in reader_accepts(new, old)]
        if mode.forward:
            findings += [replace(f, direction="forward", against=version) for f in reader_accepts(old, new)]
    return tuple(v for v, _ in targets), findings
