"""The PostgreSQL schema, as an ordered list of migrations.

Each migration runs once, in one transaction with the version bump (PostgreSQL DDL is
transactional), under an advisory lock so two replicas migrating at once apply it once.
Append new migrations; never edit one that shipped. Everything lives in the ``eventward``
schema so a DBA can grant, back up and drop it as one unit.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA = "eventward"


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
            f"""CREATE TABLE {SCHEMA}.deks (
                kid text COLLATE "C" PRIMARY KEY,  -- byte order, as SQLite: rewrap pages by kid
                subject_hash text NOT NULL,
                class text NOT NULL,
                version integer NOT NULL,
                kek_id text NOT NULL,
                wrapped bytea NOT NULL,
                created double precision NOT NULL,
                uses bigint NOT NULL DEFAULT 0,
                fmt integer NOT NULL DEFAULT 1,
                uses_tag bytea NOT NULL DEFAULT ''::bytea,
                UNIQUE (subject_hash, class, version)
            )""",
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
            f"""CREATE TABLE {SCHEMA}.pseudonyms (
                lookup text PRIMARY KEY,
                pseudonym text NOT NULL UNIQUE,
                created double precision NOT NULL,
                kind integer NOT NULL DEFAULT 2
            )""",
            f"INSERT INTO {SCHEMA}.key_meta (key, value) VALUES ('epoch', '0')",
            # The key store's random id (KeyService MACs it under the KMS: a stranger's store is refused).
            f"INSERT INTO {SCHEMA}.key_meta (key, value) "
            "VALUES ('store_id', 's-' || replace(gen_random_uuid()::text, '-', ''))",
        ),
    ),
)

TARGET_VERSION = MIGRATIONS[-1].version
