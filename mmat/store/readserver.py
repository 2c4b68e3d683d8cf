"""Reads while a job writes: the writing process answers read queries on a local Unix socket.

DuckDB lets one process hold a database file read-write, and while it does no other process can open
the file at all, not even read-only. So the process that holds the file (``Store.open`` read-write)
also serves reads: a thread listens on ``<db>.read.sock`` next to the database (mode 0600, only the
same user or root may connect; long paths fall back to a private ``$TMPDIR/mmat-<uid>/`` folder) and
runs each request on its own cursor with :func:`mmat.store.readonly.run_read_query`.

Freshness: a query through the socket sees every transaction the writer committed before the query
started (synth commits after each seed, prefs after each task, eval after each item); rows still
queued in the writer are not visible yet. Each query reads one consistent snapshot (DuckDB's MVCC).

Wire format, one request per connection: the client sends one JSON line ``{"sql": ..., "params": ...}``;
the server answers ``O`` followed by an Arrow IPC stream, or ``E`` followed by a UTF-8 error message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import stat
import struct
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from mmat.errors import MmatError, StoreError
from mmat.store.readonly import Params, run_read_query

__all__ = ["ReadServer", "WriterUnreachable", "query_writer", "socket_path"]

log = logging.getLogger(__name__)

SOCKET_SUFFIX = ".read.sock"
MAX_REQUEST_BYTES = 1 << 20
MAX_CLIENTS = 8  # concurrent reads served; more wait in the listen backlog
CONNECT_TIMEOUT_S = 5.0
_MAX_SUN_PATH = 100  # Linux's sun_path holds 108 bytes; keep a margin


class WriterUnreachable(Exception):
    """No writing process answers on the socket (none runs, or it is starting or stopping)."""


def socket_path(db_path: Path) -> Path:
    """Where the writer of ``db_path`` listens: next to the file, or a private temp folder for long paths."""
    db_path = Path(db_path).absolute()
    near = db_path.with_name(db_path.name + SOCKET_SUFFIX)
    if len(os.fsencode(near)) <= _MAX_SUN_PATH:
        return near
    digest = hashlib.sha256(os.fsencode(db_path)).hexdigest()[:24]
    return _fallback_dir() / f"{digest}{SOCKET_SUFFIX}"


def _fallback_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"mmat-{os.getuid()}"


def _private_dir(folder: Path) -> None:
    """The fallback folder must be ours and closed to others, or another user could plant a socket."""
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise StoreError(f"{folder} is not a private folder of this user: remove it or set TMPDIR elsewhere")


class ReadServer:
    """Serves read queries for the process that holds the store read-write. Start, then close."""

    def __init__(self, db_path: Path, cursor: Callable[[], duckdb.DuckDBPyConnection]):
        self.path = socket_path(db_path)
        self._cursor = cursor
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._active: set[threading.Thread] = set()
        self._active_lock = threading.Lock()
        self._stopping = threading.Event()
        self._inode: int | None = None

    def start(self) -> None:
        if self.path.parent == _fallback_dir():  # the fallback for long paths
            _private_dir(self.path.parent)
        # Bind under a temporary name, restrict it, then move it into place: no moment exists in which
        # the final name accepts connections from other users. We hold the database's lock, so a socket
        # already at the final name was left by a writer that died: replace it.
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(tmp))
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
            sock.listen(16)
        except OSError:
            sock.close()
            tmp.unlink(missing_ok=True)
            raise
        self._inode = self.path.lstat().st_ino
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="mmat-store-reads", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting, let running reads finish (up to ``timeout``), remove the socket file."""
        if self._sock is None:
            return
        self._stopping.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._active_lock:
            active = list(self._active)
        for t in active:
            t.join(timeout)
        try:
            if self.path.lstat().st_ino == self._inode:  # never remove a newer writer's socket
                self.path.unlink()
        except FileNotFoundError:
            pass
        self._sock = None

    # --- serving ----------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            if not _same_user(conn):
                conn.close()
                continue
            self._slots.acquire()
            t = threading.Thread(target=self._serve, args=(conn,), name="mmat-store-read", daemon=True)
            with self._active_lock:
                self._active.add(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                try:
                    request = _read_request(conn)
                    with self._cursor() as cur:
                        table = run_read_query(cur, request["sql"], request.get("params"))
                except (MmatError, ValueError, KeyError, TypeError) as e:
                    conn.sendall(b"E" + str(e).encode("utf-8", "replace"))
                    return
                except duckdb.Error as e:  # the store closed under a read
                    conn.sendall(b"E" + f"the writing process is closing the store ({e}): retry".encode())
                    return
                with conn.makefile("wb") as out:
                    out.write(b"O")
                    with pa.ipc.new_stream(out, table.schema) as ipc:
                        ipc.write_table(table)
        except OSError as e:  # the reader went away mid-answer
            log.debug("read client left: %s", e)
        finally:
            with self._active_lock:
                self._active.discard(threading.current_thread())
            self._slots.release()


def _same_user(conn: socket.socket) -> bool:
    """The socket file is 0600 already; check the peer too (root may read every user's store)."""
    peercred = getattr(socket, "SO_PEERCRED", None)
    if peercred is None:
        return True
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i")))
    return uid in (os.getuid(), 0)


def _read_request(conn: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise ValueError(f"the query is longer than {MAX_REQUEST_BYTES} bytes: shorten it")
    request = json.loads(data)
    if not isinstance(request, dict) or not isinstance(request.get("sql"), str):
        raise ValueError("a read request is a JSON object with a string 'sql'")
    return request


# --- the client side --------------------------------------------------------------------------------
def query_writer(db_path: Path, query: str, params: Params = None) -> pa.Table:
    """Run a read query in the process that holds ``db_path``; WriterUnreachable if none answers."""
    path = socket_path(db_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError, socket.timeout) as e:
            raise WriterUnreachable(f"{path}: {e}") from None
        except PermissionError:
            raise StoreError(
                f"{path} belongs to another user: the process writing {db_path} runs as someone else"
            ) from None
        sock.settimeout(None)  # a long query may take its time
        params = list(params) if isinstance(params, tuple) else params
        sock.sendall(json.dumps({"sql": query, "params": params}, default=str).encode() + b"\n")
        with sock.makefile("rb") as answer:
            status = answer.read(1)
            if status == b"O":
                return pa.ipc.open_stream(answer).read_all()
            if status == b"E":
                raise StoreError(answer.read().decode("utf-8", "replace"))
            raise WriterUnreachable(f"{path}: the writer closed the connection without an answer")
    finally:
        sock.close()
