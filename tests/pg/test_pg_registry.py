"""The schema registry on PostgreSQL: the registry tests that need only a registry run here again
on a PostgreSQL-backed one (so the backends cannot drift), the database keeps the invariants,
and two replicas approving the same version give one winner and a clear answer for the other."""

from __future__ import annotations

import psycopg
import pytest

from eventward._internal.schema import Registry
from eventward._internal.schema.pg_store import PgRegistryStore
from eventward._internal.store.pg import Database
from eventward.errors import ConflictError
from pg.conftest import race
from schema.conftest import TYPE, make_authz, order_schema

# The backend-neutral registry tests, collected again in this module with its `registry` fixture.
from schema.test_schema_registry import (  # noqa: F401
    test_audit_records_are_metadata_only,
    test_bad_principal_refused,
    test_bad_subject_names_refused,
    test_check_is_a_dry_run,
    test_first_version_needs_a_second_principal,
    test_identical_document_refused,
    test_incompatible_change_refused_with_every_finding,
    test_mode_changes_are_authorized_and_validated,
    test_mode_tightened_after_proposal_blocks_activation,
    test_one_open_proposal_per_subject,
    test_reads,
    test_reject_withdraw_and_final_states,
    test_same_proposal_again_gets_the_same_answer,
    test_unauthorized_approver_refused,
    test_unauthorized_proposer_refused_and_nothing_stored,
)


@pytest.fixture
def pg_dsn(pg_migrated_dsn: str) -> str:
    """Databases here start migrated (pg.conftest.pg_migrated_dsn): these tests are about the schema registry,
    not about migrating (~0.3 s of DDL per test saved)."""
    return pg_migrated_dsn


DEP = "pg-registry-tests"


def _pg_registry(dsn: str, audit: object = None) -> Registry:
    Database(dsn).migrate(DEP)
    store = PgRegistryStore(Database.open(dsn, deployment_id=DEP, pool_max=3), owns_db=True)
    return Registry(None, store=store, authorizer=make_authz(), audit=audit)


@pytest.fixture
def audit():
    from eventward._internal.audit.base import MemoryAudit

    return MemoryAudit()


@pytest.fixture
def registry(pg_dsn, audit):
    reg = _pg_registry(pg_dsn, audit)
    yield reg
    reg.close()


def test_versions_are_immutable_and_kept_in_the_database(registry, pg_dsn):
    p = registry.propose("alice", TYPE, order_schema())
    registry.approve("bob", TYPE, p.version)
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        for sql, words in (
            ("UPDATE eventward_registry.versions SET document = 'x'", "immutable"),
            ("DELETE FROM eventward_registry.versions", "never deleted"),
            ("UPDATE eventward_registry.versions SET state = 'proposed'", "final"),
            ("DELETE FROM eventward_registry.approvals", "never deleted"),
            ("TRUNCATE eventward_registry.versions", "never deleted"),
        ):
            with pytest.raises(psycopg.Error, match=words):
                c.execute(sql)
    assert registry.active(TYPE).version == p.version


def test_race_two_replicas_approve_the_same_version_one_winner(pg_dsn):
    first, second = _pg_registry(pg_dsn), _pg_registry(pg_dsn)
    try:
        p = first.propose("alice", TYPE, order_schema())

        def approve(reg: Registry) -> object:
            try:
                return reg.approve("bob", TYPE, p.version)
            except ConflictError as e:
                return e

        results = race(lambda: approve(first), lambda: approve(second))
        wins = [r for r in results if not isinstance(r, Exception)]
        losses = [r for r in results if isinstance(r, Exception)]
        assert len(wins) == 1 and len(losses) == 1
        assert "proposed" in str(losses[0]) or "not" in str(losses[0])
        assert first.active(TYPE).version == second.active(TYPE).version == p.version
    finally:
        first.close()
        second.close()
