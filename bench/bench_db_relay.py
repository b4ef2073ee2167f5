"""Where the database path's CPU goes: PostgreSQL through bare Python TLS relays (no
proxy, no RBAC, no tunnel), next to the ``ssh -L`` bastion and Limen, in one set-up (not a
test: run by hand, ``python bench/bench_db_relay.py``; see bench/README.md).

Each relay is a process of this script on uvloop, as ``limen start`` runs: it answers the
client's SSLRequest, terminates its TLS, opens TLS to PostgreSQL with the bench client
certificate (CN=alice) and relays bytes both ways with asyncio Protocols, one write per read,
as Limen's database relay does. They differ only in what they do with each simple query:

* ``relay``          nothing: the floor of a Python TLS relay on this machine;
* ``relay-sslsocket`` nothing either, on non-blocking :class:`ssl.SSLSocket` s read and
                     written from the loop's reader and writer callbacks (OpenSSL reads and
                     writes the sockets itself: no memory BIO, no transport, no Protocol)
                     instead of uvloop's TLS transports: what the floor would be with
                     another TLS plumbing;
* ``audit-loop``     Limen's own per-query audit in the relay's process: the query's
                     ``db.session.query`` event from an :class:`~limen.events.EventTemplate`,
                     queued in an :class:`~limen.events.buffer.AuditBuffer` and written
                     by a :class:`~limen.events.FileLog`
                     (batches, hash chain, fsync, its writer thread);
* ``audit-prechain`` the same events and :class:`~limen.events.buffer.AuditBuffer` as
                     ``audit-loop``, over a minimal log that chains each batch on the loop
                     and only appends and fsyncs it in a thread: by difference, what
                     FileLog's writer thread costs (with ``audit-loop``) and what the buffer
                     and the per-query events cost (with ``batch-write``);
* ``audit-process``  the query's bytes only, sent every 10 ms to a child process that
                     builds the same events with the same template (stamped when built),
                     chains them (:func:`~limen.events.chain.chain_line`), appends and
                     fsyncs them, and acknowledges: how far an audit written outside the
                     relay's process (and its GIL) would go. It writes no checkpoints and
                     takes no lock: a bound, not a design;
* ``capture``        each query's bytes and arrival time kept in a list, the list dropped
                     every 10 ms: the cost of noticing the queries;
* ``batch-build``    and every 10 ms their events built (the same template) on the loop;
* ``batch-chain``    and hash-chained (:func:`~limen.events.chain.chain_line`) on the loop;
* ``batch-write``    and handed to a thread that appends and fsyncs them (it needs no
                     Python per event, so it barely holds the GIL).

The last four are a staircase: each adds one step of an audit to the one before, so the
differences between them are what each step costs in place.

``pgbench -n -S -c CLIENTS -j 2 -T DURATION -l`` through each path in interleaved rounds,
for each of ``--clients`` (the bastion and Limen are bench_db.py's, set up as it does);
reported: the median TPS, the ratio to the bastion, the latency p99 over every transaction
and the middle's CPU per transaction (the relay's process tree; ssh + sshd; the limen
process). ``--record`` appends the table to "## Databases (PostgreSQL)" in
bench/RESULTS.md.

Usage: ``python bench/bench_db_relay.py [--rounds 3] [--duration 6] [--clients 1,16]
[--paths limen,relay,...] [--record]``; about seven minutes at the defaults (every path).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import _util
import bench_db
from bench_db import DB_NAME, DB_USER, HOST, PGBENCH, Bench, client_env

from limen.dbproto import postgres as pg
from limen.events.buffer import AuditBuffer
from limen.events.chain import chain_line
from limen.events.event import AuditEvent
from limen.events.filelog import FileLog
from limen.events.template import EventTemplate
from ports import free_port  # tests/, on the path bench_db set

RELAYS = ("relay", "relay-sslsocket", "audit-loop", "audit-prechain", "audit-process",
          "capture", "batch-build", "batch-chain", "batch-write")
STEPS = RELAYS[5:]
SSL_REQUEST = struct.pack("!II", 8, 80877103)
_BATCH = struct.Struct("!I")
_RECORD = struct.Struct("!I")
LINGER = 0.010


# ====================================================================== the relays


def query_template(session_id: str) -> EventTemplate:
    return EventTemplate("db.session.query", success=True, cluster="bench", user=DB_USER,
                         user_cluster="bench", session_id=session_id, server_id="bench-relay",
                         db_service="pg", db_protocol="postgres", db_user=DB_USER,
                         db_name=DB_NAME, remote_addr="127.0.0.1")


class Side(asyncio.Protocol):
    """One connection of a relayed session; ``on_query`` sees each whole simple query the
    client sends (a read holding exactly one, as pgbench -S sends them)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Side | None = None
        self.on_query: Callable[[bytes], None] | None = None
        self.early = bytearray()
        self.arrived: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None:
            self.early += data
            if self.arrived is not None and not self.arrived.done():
                self.arrived.set_result(None)
            return
        if self.on_query is not None and data[:1] == b"Q" and \
                struct.unpack_from("!I", data, 1)[0] == len(data) - 1:
            self.on_query(data[5:])
        assert peer.transport is not None
        peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    async def read(self, count: int) -> bytes:
        while len(self.early) < count:
            self.arrived = asyncio.get_running_loop().create_future()
            await self.arrived
        data, self.early = bytes(self.early[:count]), self.early[count:]
        return data


async def tls_handshake(sock: ssl.SSLSocket) -> None:
    """Complete ``sock``'s handshake, waiting for the socket as OpenSSL asks."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            sock.do_handshake()
            return
        except ssl.SSLWantReadError:
            watch, unwatch = loop.add_reader, loop.remove_reader
        except ssl.SSLWantWriteError:
            watch, unwatch = loop.add_writer, loop.remove_writer
        ready = loop.create_future()
        watch(sock.fileno(), ready.set_result, None)
        try:
            await ready
        finally:
            unwatch(sock.fileno())


class SocketLeg:
    """One side of the ``relay-sslsocket`` relay. Each readable event reads one TLS record
    (and what OpenSSL already holds decrypted) and sends it to the peer in one ``send``; a
    send that would block keeps its bytes, stops reading the peer and waits to be writable
    (OpenSSL wants the same bytes again)."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock, self.fd = sock, sock.fileno()
        self.peer: SocketLeg | None = None
        self.unsent = b""
        self.closed = False

    def start(self) -> None:
        self.loop.add_reader(self.fd, self.readable)

    def readable(self) -> None:
        assert self.peer is not None
        try:
            data = self.sock.recv(262144)
            while data and self.sock.pending():
                data += self.sock.recv(262144)
        except ssl.SSLWantReadError:
            return  # a record not whole yet
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self.peer.send(data)

    def send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except ssl.SSLWantWriteError:
            assert self.peer is not None
            self.unsent = data
            self.loop.remove_reader(self.peer.fd)
            self.loop.add_writer(self.fd, self.writable)
        except OSError:
            self.close()

    def writable(self) -> None:
        try:
            self.sock.send(self.unsent)
        except ssl.SSLWantWriteError:
            return
        except OSError:
            self.close()
            return
        assert self.peer is not None
        self.unsent = b""
        self.loop.remove_writer(self.fd)
        self.peer.start()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self.sock.close()
        if self.peer is not None:
            self.peer.close()


async def serve_sslsocket(port: int, pg_port: int, server_tls: ssl.SSLContext,
                          client_tls: ssl.SSLContext) -> None:
    """The ``relay-sslsocket`` relay: each accepted client joined to its own PostgreSQL
    connection by two :class:`SocketLeg` s."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server((HOST, port))
    listener.setblocking(False)
    sessions: set[asyncio.Task[None]] = set()

    async def session(raw: socket.socket) -> None:
        raw.setblocking(False)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = b""
        while len(request) < len(SSL_REQUEST):
            chunk = await loop.sock_recv(raw, len(SSL_REQUEST) - len(request))
            if not chunk:  # a probe of the port
                raw.close()
                return
            request += chunk
        await loop.sock_sendall(raw, b"S")
        front = server_tls.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        await tls_handshake(front)
        upstream = socket.socket()
        upstream.setblocking(False)
        await loop.sock_connect(upstream, (HOST, pg_port))
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_sendall(upstream, SSL_REQUEST)
        if await loop.sock_recv(upstream, 1) != b"S":
            raise SystemExit("PostgreSQL refused TLS")
        back = client_tls.wrap_socket(upstream, do_handshake_on_connect=False)
        await tls_handshake(back)
        client, database = SocketLeg(front), SocketLeg(back)
        client.peer, database.peer = database, client
        client.start()
        database.start()

    def accept() -> None:
        try:
            raw, _ = listener.accept()
        except BlockingIOError:
            return
        sessions.add(task := loop.create_task(session(raw)))
        task.add_done_callback(sessions.discard)

    loop.add_reader(listener.fileno(), accept)
    await loop.create_future()  # until the process is stopped


class PrechainLog:
    """The ``audit-prechain`` relay's log: an emitter whose ``emit_many`` chains the batch on
    the loop and hands the lines to a thread that appends and fsyncs them."""

    def __init__(self, log_dir: Path) -> None:
        self.fd = open_log(log_dir)
        self.head, self.seq = "0" * 64, 0
        self.loop = asyncio.get_running_loop()
        self.jobs: queue.SimpleQueue[tuple[bytes, asyncio.Future[None]]] = queue.SimpleQueue()
        threading.Thread(target=self.write, daemon=True).start()

    async def emit(self, event: AuditEvent) -> None:
        await self.emit_many([event])

    async def emit_many(self, events: Sequence[AuditEvent]) -> None:
        bodies = [event.to_json().encode() for event in events]
        lines, self.head, self.seq = chained(bodies, self.head, self.seq)
        written: asyncio.Future[None] = self.loop.create_future()
        self.jobs.put((lines, written))
        await written

    def write(self) -> None:
        while True:
            lines, written = self.jobs.get()
            os.write(self.fd, lines)
            os.fsync(self.fd)
            self.loop.call_soon_threadsafe(written.set_result, None)


class AuditChild:
    """The ``audit-process`` relay's writer: queries batched for LINGER, then one pipe write."""

    def __init__(self, log_dir: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--audit-child", str(log_dir)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.stdin, self.acks = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        os.set_blocking(self.acks, False)
        asyncio.get_running_loop().add_reader(self.acks, lambda: os.read(self.acks, 4096))
        self.pending: list[bytes] = []

    def record(self, query: bytes) -> None:
        if not self.pending:
            asyncio.get_running_loop().call_later(LINGER, self.flush)
        self.pending += (_RECORD.pack(len(query)), query)

    def flush(self) -> None:
        blob, self.pending = b"".join(self.pending), []
        os.write(self.stdin, _BATCH.pack(len(blob)) + blob)


def open_log(log_dir: Path) -> int:
    """The relays' own append-only query log (no rotation, lock or checkpoints)."""
    return os.open(log_dir / "queries.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def chained(bodies: list[bytes], head: str, seq: int) -> tuple[bytes, str, int]:
    """``bodies`` as chained lines after ``head`` and ``seq``: (the lines, new head, new seq)."""
    lines = []
    for body in bodies:
        seq += 1
        line, head = chain_line(body, head, seq)
        lines += (line, b"\n")
    return b"".join(lines), head, seq


class BatchAudit:
    """The staircase relays (``capture`` ... ``batch-write``): queries kept as they come, then
    every LINGER as many steps of an audit as ``kind`` takes, for the whole batch."""

    def __init__(self, kind: str, log_dir: Path) -> None:
        self.steps = STEPS.index(kind)
        self.make = query_template(str(uuid.uuid4())).make
        self.pending: list[tuple[int, bytes]] = []
        self.head, self.seq = "0" * 64, 0
        self.batches: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        if kind == "batch-write":
            threading.Thread(target=self.write, args=(open_log(log_dir),), daemon=True).start()

    def record(self, query: bytes) -> None:
        if not self.pending:
            asyncio.get_running_loop().call_later(LINGER, self.flush)
        self.pending.append((time.time_ns(), query))

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        if self.steps < 1:
            return
        bodies = [self.make(query=pg.decode_query(query)).to_json().encode()
                  for _, query in batch]
        if self.steps < 2:
            return
        lines, self.head, self.seq = chained(bodies, self.head, self.seq)
        if self.steps == 3:
            self.batches.put(lines)

    def write(self, fd: int) -> None:
        while True:
            os.write(fd, self.batches.get())
            os.fsync(fd)


def audit_child(log_dir: Path) -> None:
    """Build, chain, append and fsync each batch from stdin; one byte back per batch."""
    template = query_template(str(uuid.uuid4()))
    fd = open_log(log_dir)
    source, head, seq = sys.stdin.buffer, "0" * 64, 0
    while header := source.read(_BATCH.size):
        blob = source.read(_BATCH.unpack(header)[0])
        bodies, at = [], 0
        while at < len(blob):
            (length,) = _RECORD.unpack_from(blob, at)
            query = blob[at + _RECORD.size:at + _RECORD.size + length]
            at += _RECORD.size + length
            bodies.append(template.make(query=pg.decode_query(query)).to_json().encode())
        lines, head, seq = chained(bodies, head, seq)
        os.write(fd, lines)
        os.fsync(fd)
        sys.stdout.buffer.write(b"k")
        sys.stdout.buffer.flush()


async def serve(kind: str, port: int, pg_port: int, files: list[str]) -> None:
    cert, key, client_cert, client_key, logs = files
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_tls.check_hostname = False
    client_tls.verify_mode = ssl.CERT_NONE  # the bench's own PostgreSQL on 127.0.0.1
    client_tls.load_cert_chain(client_cert, client_key)
    if kind == "relay-sslsocket":
        await serve_sslsocket(port, pg_port, server_tls, client_tls)
        return
    loop = asyncio.get_running_loop()
    log_dir = Path(logs)
    child = AuditChild(log_dir) if kind == "audit-process" else None
    buffer = AuditBuffer(FileLog(log_dir)) if kind == "audit-loop" else \
        AuditBuffer(PrechainLog(log_dir)) if kind == "audit-prechain" else None
    steps = BatchAudit(kind, log_dir) if kind in STEPS else None

    def on_query_for() -> Callable[[bytes], None] | None:
        if child is not None:
            return child.record
        if steps is not None:
            return steps.record
        if buffer is None:
            return None
        stream, make = buffer.stream(), query_template(str(uuid.uuid4())).make

        def record(query: bytes) -> None:
            stream.record_nowait(make(query=pg.decode_query(query)))
        return record

    async def session(front: Side) -> None:
        await front.read(len(SSL_REQUEST))
        assert front.transport is not None
        front.transport.write(b"S")
        front.transport = await loop.start_tls(front.transport, front, server_tls,
                                               server_side=True)
        back = Side()
        raw, _ = await loop.create_connection(lambda: back, HOST, pg_port)
        raw.write(SSL_REQUEST)
        if await back.read(1) != b"S":
            raise SystemExit("PostgreSQL refused TLS")
        back.transport = await loop.start_tls(raw, back, client_tls)
        front.on_query = on_query_for()
        front.peer, back.peer = back, front
        if front.early:
            back.transport.write(bytes(front.early))
            front.early.clear()

    def accepted() -> Side:
        side = Side()
        made = side.connection_made

        def connection_made(transport: asyncio.BaseTransport) -> None:
            made(transport)
            sessions.add(task := loop.create_task(session(side)))
            task.add_done_callback(sessions.discard)
        side.connection_made = connection_made  # type: ignore[method-assign]
        return side

    sessions: set[asyncio.Task[None]] = set()
    server = await loop.create_server(accepted, HOST, port)
    await server.serve_forever()


# ====================================================================== the measurement


class RelayBench(Bench):
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        super().__init__(args, work)
        self.relays: dict[str, tuple[subprocess.Popen[bytes], int]] = {}

    def start_relays(self, kinds: tuple[str, ...]) -> None:
        assert self.pg is not None
        cert, key = (self.limen.server_prefix.with_suffix(ext) for ext in (".crt", ".key"))
        files = [str(cert), str(key), str(self.work / "direct-client.crt"),
                 str(self.work / "direct-client.key")]
        for kind in kinds:
            port = free_port()
            (self.work / kind).mkdir()
            proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port),
                                     str(self.pg.port), *files, str(self.work / kind)])
            bench_db.wait_for(lambda p=port: bench_db.port_open(p), 30.0, f"relay {kind}")
            self.relays[kind] = (proc, port)

    def stop_relays(self) -> None:
        for proc, _ in self.relays.values():
            bench_db.stop_process(proc)

    def path_conninfo(self, path: str) -> str:
        if path in self.relays:
            return (f"host={HOST} port={self.relays[path][1]} user={DB_USER} dbname={DB_NAME} "
                    f"sslmode=require sslcert={self.work / 'direct-client.crt'} "
                    f"sslkey={self.work / 'direct-client.key'}")
        return self.conninfo(path)

    def middle_cpu(self, path: str) -> float:
        if path in self.relays:
            return bench_db.tree_cpu(self.relays[path][0].pid)
        return self.limen.cpu() if path == "limen" else self.bastion.cpu()

    def run(self, path: str, clients: int, duration: int) -> Run:
        env = self.env(path) if path in ("bastion", "limen") else client_env()
        logs = Path(tempfile.mkdtemp(prefix=f"{path}-{clients}-", dir=self.work))
        before = self.middle_cpu(path)
        out = subprocess.run([PGBENCH, "-n", "-S", "-c", str(clients), "-j",
                              str(min(clients, 2)), "-T", str(duration), "-l", "--log-prefix",
                              str(logs / "tx"), self.path_conninfo(path)],
                             env=env, capture_output=True, text=True, check=False)
        cpu = self.middle_cpu(path) - before
        found = re.search(r"tps = ([0-9.]+)", out.stdout)
        if out.returncode or found is None:
            raise SystemExit(f"{path}: pgbench failed:\n{out.stdout}{out.stderr}")
        latencies = bench_db.transaction_latencies(logs)
        shutil.rmtree(logs, ignore_errors=True)
        tps = float(found.group(1))
        return Run(tps, _util.percentile(latencies, 99), cpu / (tps * duration) * 1e6)


class Run(NamedTuple):
    tps: float
    p99: float
    """Milliseconds."""
    cpu: float
    """The middle's CPU microseconds per transaction."""


def table(paths: tuple[str, ...], clients_list: list[int],
          results: dict[tuple[str, int], list[Run]]) -> list[str]:
    """One row per path: per client count, TPS [rounds], / bastion, p99 and middle CPU."""
    heads = ["path"]
    for clients in clients_list:
        heads += [f"TPS, {clients}", f"/ bastion, {clients}", f"p99 ms, {clients}",
                  f"middle µs/tx, {clients}"]
    lines = ["| " + " | ".join(heads) + " |", "|---|" + "---:|" * (len(heads) - 1)]
    for path in paths:
        cells = [path]
        for clients in clients_list:
            runs, bastion = results[path, clients], results["bastion", clients]
            tps = bench_db.median([run.tps for run in runs])
            cells += [f"{tps:,.0f} [{', '.join(f'{run.tps:.0f}' for run in runs)}]",
                      f"{tps / bench_db.median([run.tps for run in bastion]):.2f}",
                      f"{bench_db.median([run.p99 for run in runs]):.2f}",
                      f"{bench_db.median([run.cpu for run in runs]):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6, help="seconds per pgbench run")
    parser.add_argument("--clients", type=lambda s: [int(v) for v in s.split(",")],
                        default=[1, 16], help="comma list of pgbench client counts")
    parser.add_argument("--scale", type=int, default=5, help="pgbench -i -s SCALE")
    parser.add_argument("--paths", type=lambda s: tuple(s.split(",")),
                        default=("limen", *RELAYS),
                        help="comma list of the paths measured besides the bastion: limen "
                        f"and the relays ({', '.join(RELAYS)}); all by default")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--serve", nargs=8, metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--audit-child", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.audit_child:
        audit_child(Path(args.audit_child))
        return
    if args.serve:
        import uvloop

        kind, port, pg_port, *files = args.serve
        uvloop.run(serve(kind, int(port), int(pg_port), files))
        return
    facts = _util.machine_facts()
    _util.print_machine(facts)
    args.event_loop, args.perf, args.copy_mb, args.skip = "uvloop", False, 0, ""
    work = Path(tempfile.mkdtemp(prefix="limen-bench-db-relay-"))
    unknown = set(args.paths) - {"limen", *RELAYS}
    if unknown:
        parser.error(f"unknown paths: {', '.join(sorted(unknown))}")
    paths = ("bastion", *args.paths)
    results: dict[tuple[str, int], list[Run]] = {(p, c): [] for p in paths
                                                 for c in args.clients}
    try:
        bench = RelayBench(args, work)
        with bench.running():
            bench.start_relays(tuple(p for p in args.paths if p in RELAYS))
            try:
                for _ in range(args.rounds):
                    for clients in args.clients:
                        for path in paths:
                            run = bench.run(path, clients, args.duration)
                            results[path, clients].append(run)
                            print(f"-c {clients:<2} {path:<15} {run.tps:8.0f} tps, p99 "
                                  f"{run.p99:5.2f} ms, middle {run.cpu:6.1f} us/tx", flush=True)
            finally:
                bench.stop_relays()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    command = "`.venv/bin/python bench/bench_db_relay.py " + " ".join(sys.argv[1:]) + "`"
    text = "\n".join([
        f"### {time.strftime('%Y-%m-%d %H:%M')} — bare relays (bench_db_relay.py)", "",
        f"command: {command}", "",
        "machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()), "",
        f"`pgbench -S`, {args.rounds} interleaved rounds of {args.duration} s, median "
        "[each round]:", "", *table(paths, args.clients, results)])
    print()
    print(text)
    if args.record:
        bench_db.record(text)


if __name__ == "__main__":
    main()
