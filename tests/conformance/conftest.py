"""Where the standards' own test vectors live on this machine: Debian packages, never copies.

The suites are third-party data, so they are not committed here: CI installs the Debian
packages named below (see docs/CONFORMANCE.md) and these fixtures find the files. A missing
package fails the test with one line naming it; it is never a silent skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

JSON_SCHEMA_SUITE = Path("/usr/share/perl5/auto/share/dist/Test-JSON-Schema-Acceptance/tests/draft2020-12")
SUMDB_NOTE_TEST = Path("/usr/share/gocode/src/golang.org/x/mod/sumdb/note/note_test.go")
SUMDB_NOTE_EXAMPLE = SUMDB_NOTE_TEST.with_name("example_test.go")
CT_MERKLE_VERIFIER_TEST = Path(
    "/usr/share/gocode/src/github.com/google/certificate-transparency/go/merkletree/merkle_verifier_test.go"
)
CT_MERKLE_TREE_TEST = Path(
    "/usr/share/gocode/src/github.com/google/certificate-transparency/go/merkletree/merkle_tree_test.go"
)


def _need(path: Path, package: str) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: apt-get install {package}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def json_schema_suite() -> Path:
    """JSON-Schema-Test-Suite draft 2020-12 (Debian ships it inside the Perl acceptance module)."""
    _need(JSON_SCHEMA_SUITE / "optional" / "format", "libtest-json-schema-acceptance-perl")
    return JSON_SCHEMA_SUITE


@pytest.fixture(scope="session")
def sumdb_note_test() -> str:
    """golang.org/x/mod sumdb/note's test file: signed notes, keys and signatures as Go literals."""
    return _need(SUMDB_NOTE_TEST, "golang-golang-x-mod-dev").read_text()


@pytest.fixture(scope="session")
def sumdb_note_example() -> str:
    """golang.org/x/mod sumdb/note's examples (a second signer added to a signed note)."""
    return _need(SUMDB_NOTE_EXAMPLE, "golang-golang-x-mod-dev").read_text()


@pytest.fixture(scope="session")
def ct_merkle_tests() -> tuple[str, str]:
    """certificate-transparency-go's RFC 6962 reference-tree vectors (verifier and tree tests)."""
    package = "golang-github-google-certificate-transparency-dev"
    return _need(CT_MERKLE_VERIFIER_TEST, package).read_text(), _need(CT_MERKLE_TREE_TEST, package).read_text()
