"""`brokerage.sql.Database` on PostgreSQL: a bounded pool of connections shared by the threads, a
transaction held on one connection, and a database that is not there failing at once."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from conftest import PG_URL, free_port

from brokerage.sql import DATABASE_DOWN, POOL_MAX_SIZE, Database


def _named(pg_url: str) -> tuple[Database, str]:
    """A Database whose connections the server can tell apart (by application_name)."""
    name = f"sqltest_{uuid.uuid4().hex[:10]}"
    return Database(f"{pg_url}&application_name={name}"), name


def _server_connections(name: str) -> int:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        row = conn.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def test_many_threads_share_a_bounded_number_of_connections(pg_url: str) -> None:
    db, name = _named(pg_url)
    try:
        threads = POOL_MAX_SIZE * 3
        barrier = threading.Barrier(threads)
        most: list[int] = []

        def work(_: int) -> int:
            barrier.wait()
            row = db.fetchone("SELECT pg_backend_pid() AS pid, pg_sleep(0.05)")
            most.append(_server_connections(name))
            assert row is not None
            return int(row["pid"])

        with ThreadPoolExecutor(threads) as pool:
            pids = set(pool.map(work, range(threads)))
        assert len(pids) <= POOL_MAX_SIZE < threads  # one connection per thread would have opened `threads`
        assert max(most) <= POOL_MAX_SIZE
    finally:
        db.close()
    # close() ends them all; a backend leaves pg_stat_activity a moment after its client hung up
    for _ in range(100):
        if _server_connections(name) == 0:
            break
        time.sleep(0.05)
    assert _server_connections(name) == 0


def test_a_transaction_keeps_its_connection_and_other_threads_do_not_see_it_before_commit(pg_url: str) -> None:
    db, _ = _named(pg_url)
    try:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
        seen_inside: list[int] = []
        with db.transaction():
            pid = db.fetchone("SELECT pg_backend_pid() AS pid")
            db.execute("INSERT INTO notes (id) VALUES (1)")
            with db.transaction():  # nested: joins the outer one
                db.execute("INSERT INTO notes (id) VALUES (2)")
            assert db.fetchone("SELECT pg_backend_pid() AS pid") == pid
            reader = threading.Thread(target=lambda: seen_inside.append(len(db.fetchall("SELECT id FROM notes"))))
            reader.start()
            reader.join()
        assert seen_inside == [0]
        assert [r["id"] for r in db.fetchall("SELECT id FROM notes ORDER BY id")] == [1, 2]
        def change_of_mind() -> None:
            with db.transaction():
                db.execute("INSERT INTO notes (id) VALUES (3)")
                raise RuntimeError("changed my mind")

        with pytest.raises(RuntimeError, match="changed my mind"):
            change_of_mind()
        assert db.fetchone("SELECT COUNT(*) AS n FROM notes") == {"n": 2}  # rolled back, connection reusable
    finally:
        db.close()


def test_close_from_one_thread_leaves_the_others_working(pg_url: str) -> None:
    """What the tests do per thread (`db.close()` as each worker ends) while other workers go on."""
    db, _ = _named(pg_url)
    db.execute("CREATE TABLE hits (n INTEGER NOT NULL)")
    in_transaction, closed = threading.Event(), threading.Event()

    def writer() -> None:
        with db.transaction():
            db.execute("INSERT INTO hits (n) VALUES (1)")
            in_transaction.set()
            closed.wait(5)
            db.execute("INSERT INTO hits (n) VALUES (2)")

    thread = threading.Thread(target=writer)
    thread.start()
    assert in_transaction.wait(5)
    db.close()
    closed.set()
    thread.join(10)
    try:
        assert db.fetchone("SELECT SUM(n) AS total FROM hits") == {"total": 3}  # committed; a new pool answers
    finally:
        db.close()


def test_a_database_that_is_not_there_fails_at_once() -> None:
    db = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    started = time.monotonic()
    with pytest.raises(DATABASE_DOWN):
        db.fetchone("SELECT 1")
    with pytest.raises(DATABASE_DOWN), db.transaction():
        pass
    assert time.monotonic() - started < 3  # not after the pool's wait for a connection
