"""The schema registry: governed, versioned schemas per event type, as a security boundary.

``Registry`` (registry.py) is the entry point; ``compile_schema`` checks and compiles one
document without a registry (field spec, validator, size limit).
"""

from eventward._internal.schema.compiled import CompiledSchema, compile_schema
from eventward._internal.schema.model import CheckReport, Finding, Mode, Proposal, SchemaVersion, State, SubjectInfo
from eventward._internal.schema.registry import Registry

__all__ = [
    "CheckReport",
    "CompiledSchema",
    "Finding",
    "Mode",
    "Proposal",
    "Registry",
    "SchemaVersion",
    "State",
    "SubjectInfo",
    "compile_schema",
]
