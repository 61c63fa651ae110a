"""The PostgreSQL schema, as an ordered list of migrations.

Each migration runs once, in one transaction with the version bump (PostgreSQL DDL is
transactional), under an advisory lock so two replicas migrating at once apply it once.
Append new migrations; never edit one that shipped. Everything lives in the ``eventward``
schema so a DBA can grant, back up and drop it as one unit.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA = "eventward"
REGISTRY_SCHEMA = "eventward_registry"  # the schema registry's tables, SQLite names too
AUDIT_SCHEMA = "eventward_audit"  # the audit log's tables keep their SQLite names here
CONTROL_SCHEMA = "eventward_control"  # trust registry (trust.db) and control plane (control.db)


PARTITIONS = 16  # of the DEK and pseudonym tables


def _partitions(table: str) -> tuple[str, ...]:
    return tuple(
        f"CREATE TABLE {SCHEMA}.{table}_p{i} PARTITION OF {SCHEMA}.{table} "
        f"FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {i})"
        for i in range(PARTITIONS)
    )


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "meta and key store (wrapped DEKs, tombstones, holds, erasure ledger, pseudonyms)",
        (
            f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
            f"""CREATE TABLE {SCHEMA}.meta (
                key text PRIMARY KEY,
                value text NOT NULL
            )""",
            f"""CREATE TABLE {SCHEMA}.migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )""",
            # Wrapped DEKs and pseudonyms are hash-partitioned by subject: erasure rewrites (VACUUM
            # FULL) only the partition that held the subject's rows, so readers of the others never
            # wait and the pause is 1/PARTITIONS of the table's.
            f"""CREATE TABLE {SCHEMA}.deks (
                kid text COLLATE "C" NOT NULL,  -- byte order, as SQLite: rewrap pages by kid
                subject_hash text NOT NULL,
                class text NOT NULL,
                version integer NOT NULL,
                kek_id text NOT NULL,
                wrapped bytea NOT NULL,
                created double precision NOT NULL,
                uses bigint NOT NULL DEFAULT 0,
                fmt integer NOT NULL DEFAULT 1,
                uses_tag bytea NOT NULL DEFAULT ''::bytea,
                PRIMARY KEY (subject_hash, kid),
                UNIQUE (subject_hash, class, version)
            ) PARTITION BY HASH (subject_hash)""",
            *_partitions("deks"),
            f"CREATE INDEX deks_kid ON {SCHEMA}.deks (kid)",  # unique in practice: 128 random bits
            f"CREATE INDEX deks_class_kek ON {SCHEMA}.deks (class, kek_id)",
            f"""CREATE TABLE {SCHEMA}.tombstones (
                kid text PRIMARY KEY,
                class text NOT NULL,
                destroyed_at double precision NOT NULL
            )""",
            f"""CREATE TABLE {SCHEMA}.holds (
                subject_hash text PRIMARY KEY,
                reason text NOT NULL,
                since double precision NOT NULL,
                placed_by text NOT NULL DEFAULT ''
            )""",
            f"""CREATE TABLE {SCHEMA}.erasures (
                subject_hash text NOT NULL,
                time double precision NOT NULL,
                classes text NOT NULL,
                destroyed integer NOT NULL,
                PRIMARY KEY (subject_hash, time)
            )""",
            f"""CREATE TABLE {SCHEMA}.key_meta (
                key text PRIMARY KEY,
                value text NOT NULL
            )""",
            # One pseudonym per lookup is kept by the key store's write lock (a partitioned table's
            # unique keys must contain the partition key).
            f"""CREATE TABLE {SCHEMA}.pseudonyms (
                lookup text NOT NULL,
                pseudonym text PRIMARY KEY,
                created double precision NOT NULL,
                kind integer NOT NULL DEFAULT 2
            ) PARTITION BY HASH (pseudonym)""",
            *_partitions("pseudonyms"),
            f"CREATE INDEX pseudonyms_lookup ON {SCHEMA}.pseudonyms (lookup)",
            f"INSERT INTO {SCHEMA}.key_meta (key, value) VALUES ('epoch', '0')",
            # The key store's random id (KeyService MACs it under the KMS: a stranger's store is refused).
            f"INSERT INTO {SCHEMA}.key_meta (key, value) "
            "VALUES ('store_id', 's-' || replace(gen_random_uuid()::text, '-', ''))",
        ),
    ),
    Migration(
        2,
        "audit log (records, stored subtree hashes, checkpoints, attachments, published index, watermarks)",
        (
            f"CREATE SCHEMA IF NOT EXISTS {AUDIT_SCHEMA}",
            f"CREATE TABLE {AUDIT_SCHEMA}.meta (key text PRIMARY KEY, value text NOT NULL)",
            f"CREATE TABLE {AUDIT_SCHEMA}.records (idx bigint PRIMARY KEY, leaf bytea NOT NULL, body bytea NOT NULL)",
            f"""CREATE TABLE {AUDIT_SCHEMA}.nodes (
                level integer NOT NULL, idx bigint NOT NULL, hash bytea NOT NULL, PRIMARY KEY (level, idx)
            )""",
            f"""CREATE TABLE {AUDIT_SCHEMA}.checkpoints (
                id bigserial PRIMARY KEY, size bigint NOT NULL, root bytea NOT NULL, time text NOT NULL,
                text text NOT NULL
            )""",
            f"""CREATE TABLE {AUDIT_SCHEMA}.attachments (
                id bigserial PRIMARY KEY, kind text NOT NULL, key text NOT NULL, idx bigint NOT NULL, doc text NOT NULL
            )""",
            f"CREATE INDEX attachments_by_key ON {AUDIT_SCHEMA}.attachments (kind, key)",
            f"""CREATE TABLE {AUDIT_SCHEMA}.watermarks (
                source text NOT NULL, stream text NOT NULL, "offset" bigint NOT NULL, PRIMARY KEY (source, stream)
            )""",
            f"""CREATE TABLE {AUDIT_SCHEMA}.published (
                stream text NOT NULL, batch text NOT NULL, idx bigint NOT NULL, PRIMARY KEY (stream, batch)
            )""",
            # A guard against accidents, as the SQLite triggers: tampering by someone who drops them
            # is what audit verify and signed checkpoints detect.
            f"""CREATE FUNCTION {AUDIT_SCHEMA}.append_only() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION 'audit % are append-only', TG_TABLE_NAME; END $$""",
            *(
                f"CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {AUDIT_SCHEMA}.{t} "
                f"FOR EACH ROW EXECUTE FUNCTION {AUDIT_SCHEMA}.append_only()"
                for t in ("records", "nodes")
            ),
            *(
                f"CREATE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {AUDIT_SCHEMA}.{t} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {AUDIT_SCHEMA}.append_only()"
                for t in ("records", "nodes")
            ),
        ),
    ),
    Migration(
        3,
        "schema registry (subjects, immutable versions, approvals, change counter)",
        (
            f"CREATE SCHEMA IF NOT EXISTS {REGISTRY_SCHEMA}",
            f"CREATE TABLE {REGISTRY_SCHEMA}.subjects (type text PRIMARY KEY, mode text NOT NULL, "
            "created_at double precision NOT NULL)",
            f"""CREATE TABLE {REGISTRY_SCHEMA}.versions (
                type text NOT NULL,
                version integer NOT NULL CHECK (version >= 1),
                fmt text NOT NULL CHECK (fmt IN ('json', 'avro')),
                document bytea NOT NULL,
                fingerprint text NOT NULL,
                state text NOT NULL CHECK (state IN ('proposed', 'active', 'rejected', 'superseded')),
                proposer text NOT NULL,
                report text NOT NULL,
                created_at double precision NOT NULL,
                decided_at double precision,
                decided_by text,
                PRIMARY KEY (type, version)
            )""",
            f"CREATE UNIQUE INDEX one_active ON {REGISTRY_SCHEMA}.versions (type) WHERE state = 'active'",
            f"CREATE UNIQUE INDEX one_proposed ON {REGISTRY_SCHEMA}.versions (type) WHERE state = 'proposed'",
            f"""CREATE TABLE {REGISTRY_SCHEMA}.approvals (
                type text NOT NULL,
                version integer NOT NULL,
                kind text NOT NULL CHECK (kind IN ('schema', 'security')),
                principal text NOT NULL,
                at double precision NOT NULL,
                PRIMARY KEY (type, version, kind)
            )""",
            f"CREATE TABLE {REGISTRY_SCHEMA}.meta (key text PRIMARY KEY, value bigint NOT NULL)",
            f"INSERT INTO {REGISTRY_SCHEMA}.meta (key, value) VALUES ('generation', 0)",
            # The SQLite registry's triggers, as PL/pgSQL: version content immutable, rejected and
            # superseded final, nothing ever deleted.
            f"""CREATE FUNCTION {REGISTRY_SCHEMA}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$""",
            f"""CREATE TRIGGER versions_immutable BEFORE UPDATE OF type, version, fmt, document, fingerprint,
                proposer, report, created_at ON {REGISTRY_SCHEMA}.versions FOR EACH ROW
                EXECUTE FUNCTION {REGISTRY_SCHEMA}.refuse('schema versions are immutable')""",
            f"""CREATE TRIGGER versions_final BEFORE UPDATE OF state ON {REGISTRY_SCHEMA}.versions FOR EACH ROW
                WHEN (OLD.state IN ('rejected', 'superseded') OR NEW.state = 'proposed')
                EXECUTE FUNCTION {REGISTRY_SCHEMA}.refuse('rejected and superseded versions are final')""",
            f"""CREATE TRIGGER versions_kept BEFORE DELETE ON {REGISTRY_SCHEMA}.versions FOR EACH ROW
                EXECUTE FUNCTION {REGISTRY_SCHEMA}.refuse('schema versions are never deleted')""",
            f"""CREATE TRIGGER approvals_kept BEFORE DELETE ON {REGISTRY_SCHEMA}.approvals FOR EACH ROW
                EXECUTE FUNCTION {REGISTRY_SCHEMA}.refuse('approvals are never deleted')""",
            *(
                f"CREATE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {REGISTRY_SCHEMA}.{t} FOR EACH STATEMENT "
                f"EXECUTE FUNCTION {REGISTRY_SCHEMA}.refuse('{t} are never deleted')"
                for t in ("versions", "approvals")
            ),
        ),
    ),
    Migration(
        4,
        "trust registry (signing keys) and the control plane's seal grants",
        (
            f"CREATE SCHEMA IF NOT EXISTS {CONTROL_SCHEMA}",
            f"""CREATE TABLE {CONTROL_SCHEMA}.trust_keys (
                kid text PRIMARY KEY,
                principal text NOT NULL,
                public bytea NOT NULL,
                status text NOT NULL CHECK (status IN ('active', 'retired', 'revoked')),
                created double precision NOT NULL,
                changed double precision NOT NULL,
                changed_by text NOT NULL,
                purpose text NOT NULL DEFAULT 'seal',
                mldsa bytea
            )""",
            # At most one active key per principal and purpose, whatever the replicas race.
            f"CREATE UNIQUE INDEX one_active_key ON {CONTROL_SCHEMA}.trust_keys (principal, purpose) "
            "WHERE status = 'active'",
            f"CREATE INDEX trust_keys_principal ON {CONTROL_SCHEMA}.trust_keys (principal, created)",
            f"CREATE TABLE {CONTROL_SCHEMA}.seal_grants (kid text PRIMARY KEY, grants bytea NOT NULL)",
        ),
    ),
    Migration(
        5,
        "policy versions and the active pointer",
        (
            f"""CREATE TABLE {CONTROL_SCHEMA}.policy_versions (
                version integer PRIMARY KEY CHECK (version > 0),
                created double precision NOT NULL,
                principal text NOT NULL,
                sha256 text NOT NULL,
                yaml text NOT NULL,
                cedar text NOT NULL
            )""",
            f"""CREATE TABLE {CONTROL_SCHEMA}.policy_active (
                id integer PRIMARY KEY CHECK (id = 1),
                version integer NOT NULL REFERENCES {CONTROL_SCHEMA}.policy_versions (version)
            )""",
            # History is append-only, as the SQLite store's API keeps it.
            f"""CREATE FUNCTION {CONTROL_SCHEMA}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION '%', TG_ARGV[0]; END $$""",
            f"""CREATE TRIGGER policy_versions_kept BEFORE UPDATE OR DELETE ON {CONTROL_SCHEMA}.policy_versions
                FOR EACH ROW EXECUTE FUNCTION {CONTROL_SCHEMA}.refuse('policy versions are immutable')""",
        ),
    ),
    Migration(
        6,
        "the direct-path reconciler's positions (control.db on SQLite)",
        (
            f"""CREATE TABLE {CONTROL_SCHEMA}.direct_tail (stream text PRIMARY KEY, last_seq bigint NOT NULL,
                end_offset bigint NOT NULL)""",
            f"""CREATE TABLE {CONTROL_SCHEMA}.direct_refused (stream text NOT NULL, seq bigint NOT NULL,
                PRIMARY KEY (stream, seq))""",
            f"""CREATE TABLE {CONTROL_SCHEMA}.direct_progress (grp text NOT NULL, stream text NOT NULL,
                committed bigint NOT NULL, PRIMARY KEY (grp, stream))""",
        ),
    ),
    Migration(
        7,
        "the PKI's book of issued certificates (certs/issued.db on SQLite) and the current CRL",
        (
            f"""CREATE TABLE {CONTROL_SCHEMA}.issued_certs (
                serial text PRIMARY KEY,
                principal text NOT NULL,
                kind text NOT NULL,
                path text NOT NULL,
                not_before double precision NOT NULL,
                not_after double precision NOT NULL,
                spki text NOT NULL,
                status text NOT NULL CHECK (status IN ('valid', 'revoked')),
                revoked_at double precision,
                reason text,
                alerted double precision
            )""",
            f"CREATE INDEX issued_certs_principal ON {CONTROL_SCHEMA}.issued_certs (principal, not_after)",
            # A revocation is final, whatever a replica (or a retried request) writes later.
            f"""CREATE TRIGGER issued_certs_revoked_final BEFORE UPDATE OF status ON {CONTROL_SCHEMA}.issued_certs
                FOR EACH ROW WHEN (OLD.status = 'revoked' AND NEW.status <> 'revoked')
                EXECUTE FUNCTION {CONTROL_SCHEMA}.refuse('revoked certificates stay revoked')""",
            f"""CREATE TABLE {CONTROL_SCHEMA}.crl (
                id integer PRIMARY KEY CHECK (id = 1),
                number bigint NOT NULL,
                pem text NOT NULL
            )""",
        ),
    ),
    Migration(
        8,
        "the HTTP gateway's consumer groups (offsets per stream, replay state, fetches and leases) and "
        "the gateway's shared quota buckets",
        (
            f"""CREATE TABLE {CONTROL_SCHEMA}.gw_groups (gid text PRIMARY KEY, version bigint NOT NULL DEFAULT 0,
                acks bigint NOT NULL DEFAULT 0)""",
            f"""CREATE TABLE {CONTROL_SCHEMA}.gw_offsets (gid text NOT NULL, stream text NOT NULL,
                committed bigint NOT NULL CHECK (committed >= 0), PRIMARY KEY (gid, stream))""",
            f"""CREATE TABLE {CONTROL_SCHEMA}.gw_seen (gid text NOT NULL, producer text NOT NULL, id text NOT NULL,
                stream text NOT NULL, off bigint NOT NULL, status text NOT NULL, at double precision NOT NULL,
                version bigint NOT NULL, PRIMARY KEY (gid, producer, id))""",
            f"CREATE INDEX gw_seen_version ON {CONTROL_SCHEMA}.gw_seen (gid, version)",
            f"CREATE INDEX gw_seen_at ON {CONTROL_SCHEMA}.gw_seen (gid, at)",
            f"""CREATE TABLE {CONTROL_SCHEMA}.gw_seqs (gid text NOT NULL, producer text NOT NULL,
                instance text NOT NULL, stream text NOT NULL, seq bigint NOT NULL, version bigint NOT NULL,
                PRIMARY KEY (gid, producer, instance, stream))""",
            f"CREATE INDEX gw_seqs_version ON {CONTROL_SCHEMA}.gw_seqs (gid, version)",
            f"""CREATE TABLE {CONTROL_SCHEMA}.gw_fetches (gid text NOT NULL, topic text NOT NULL, holder text,
                lease_until double precision NOT NULL DEFAULT 0, upto bytea NOT NULL, entries bytea NOT NULL,
                PRIMARY KEY (gid, topic))""",
            # One token bucket per principal for every replica (gateway/quota.py), refilled on use.
            f"""CREATE TABLE {CONTROL_SCHEMA}.gw_quota (principal text PRIMARY KEY, tokens double precision NOT NULL,
                stamp double precision NOT NULL)""",
        ),
    ),
)

TARGET_VERSION = MIGRATIONS[-1].version
