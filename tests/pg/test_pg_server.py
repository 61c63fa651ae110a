"""The session's PostgreSQL server: real, loopback only, unprivileged, one database per test."""

from __future__ import annotations

import os

import psutil
import psycopg


def test_server_is_real_postgres_on_loopback_as_an_unprivileged_user(pg_server, pg_dsn):
    with psycopg.connect(pg_dsn) as c:
        version = c.execute("SHOW server_version_num").fetchone()[0]
        listen = c.execute("SHOW listen_addresses").fetchone()[0]
        db = c.execute("SELECT current_database()").fetchone()[0]
    assert int(version) >= 180000
    assert listen == "127.0.0.1"
    assert db != "postgres" and db in pg_dsn
    proc = psutil.Process(pg_server.pid)
    assert proc.is_running() and proc.uids().real != 0  # never root, even when the tests run as root
    if os.geteuid() == 0:
        assert proc.uids().real == 65534
    ports = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.pid == pg_server.pid}
    addrs = {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.pid == pg_server.pid}
    assert ports == {pg_server.port} and addrs == {"127.0.0.1"}


def test_each_test_gets_an_empty_database(pg_dsn):
    with psycopg.connect(pg_dsn) as c:
        n = c.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
        c.execute("CREATE TABLE t (x int)")
    assert n == 0


def test_pageinspect_ships_with_the_wheel(pg_dsn):
    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute("CREATE EXTENSION pageinspect")
        c.execute("CREATE TABLE t (x bytea)")
        c.execute("INSERT INTO t VALUES ('\\x00112233')")
        rows = c.execute("SELECT t_data FROM heap_page_items(get_raw_page('t', 0))").fetchall()
    assert len(rows) == 1
