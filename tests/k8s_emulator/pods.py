"""Pods that really run: the emulator's kubelet, which runs annotated Pods as local processes.

Used by ``apiserver.py`` (it starts a :class:`PodRuntime` on the emulator's loop, and the
``exec``, ``attach``, ``log`` and ``portforward`` handlers in ``podexec.py``, ``podlogs.py``
and ``portforward.py`` find the pod's processes here) and, through the API, by
``fixtures.py`` (``KubeAPI.run_pod``).

A Pod annotated ``k8s-emulator.test/local-process: "true"`` (any other Pod stays Pending,
as without a node) is run like this when it is created: each container's ``command`` plus
``args`` (``sleep infinity`` without a command; the image is ignored) is started on this
machine, in a directory of its own (``workingDir`` if set), with the container's literal
``env`` values, a pseudo-terminal when ``tty: true`` (``TERM=xterm``) and a stdin pipe when
``stdin: true``. Then ``spec.nodeName`` is set and the status says Running (``podIP``
127.0.0.1, containers ready). The processes' output is the pod's log (stdout and stderr
interleaved, as the kubelet's). A process is not restarted: when every container has exited,
the pod becomes Succeeded (all exit 0) or Failed, as with ``restartPolicy: Never``. Deleting
the Pod kills its processes (and their process groups).

The pod's network is this machine's: ``kubectl port-forward`` to port P connects to
127.0.0.1:P, unless ``k8s-emulator.test/ports: "80=43123,443=43124"`` maps container ports
to local ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import os
import pty
import signal
import struct
import termios
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import ApiError
from .store import ObjectStore

__all__ = [
    "LOCAL_PROCESS",
    "PORTS",
    "Container",
    "PodRuntime",
    "kill",
    "read_pipe",
    "read_terminal",
    "set_window_size",
    "spawn",
]

LOCAL_PROCESS = "k8s-emulator.test/local-process"
PORTS = "k8s-emulator.test/ports"
NODE_NAME = "k8s-emulator"


def rfc3339(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def set_window_size(fd: int, width: int, height: int) -> None:
    """Resize the terminal whose master is ``fd`` (its process gets SIGWINCH)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def _make_controlling_terminal() -> None:  # runs in the child before exec
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def container_env(spec: Mapping[str, Any], tty: bool, home: Path) -> dict[str, str]:
    """The environment of a process in the container ``spec``."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    if tty:
        env["TERM"] = "xterm"
    for var in spec.get("env") or ():
        if isinstance(var, Mapping) and var.get("name") and "value" in var:
            env[str(var["name"])] = str(var["value"])
    return env


async def spawn(
    argv: list[str], *, cwd: Path, env: Mapping[str, str], tty: bool, stdin: bool
) -> tuple[asyncio.subprocess.Process, int | None]:
    """Start ``argv`` in its own session: on a new pseudo-terminal (returns its master fd)
    or with pipes (stdin a pipe only when asked, else /dev/null)."""
    if tty:
        master, slave = pty.openpty()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
                preexec_fn=_make_controlling_terminal,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        return process, master
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
    )
    return process, None


async def kill(process: asyncio.subprocess.Process) -> None:
    """Kill the process and its process group, and reap it."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    await process.wait()


async def read_pipe(stream: asyncio.StreamReader, output: Callable[[bytes], None]) -> None:
    """Hand every chunk of ``stream`` to ``output`` until it ends."""
    while chunk := await stream.read(65536):
        output(chunk)


async def read_terminal(fd: int, output: Callable[[bytes], None]) -> None:
    """Hand every chunk read from the terminal master ``fd`` to ``output`` until the last
    process on the terminal is gone (EIO)."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    try:
        while True:
            await ready.wait()
            ready.clear()
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            if not chunk:
                return
            output(chunk)
    finally:
        loop.remove_reader(fd)


class Container:
    """One running container: its main process, its log and who is attached to it."""

    def __init__(self, pod: Pod, spec: Mapping[str, Any]) -> None:
        self.pod = pod
        self.spec = spec
        self.name = str(spec.get("name") or "")
        self.tty = bool(spec.get("tty"))
        self.stdin = bool(spec.get("stdin"))
        self.process: asyncio.subprocess.Process | None = None
        self.argv: list[str] = []  # the main process's command line, once started
        self.master: int | None = None  # the pseudo-terminal, when tty
        self.lines: list[tuple[str, bytes]] = []  # (RFC 3339 time, line with its newline)
        self.exit_code: int | None = None
        # attached clients get (1 stdout or 2 stderr, bytes), then None when the process exits
        self.attached: set[asyncio.Queue[tuple[int, bytes] | None]] = set()
        self._partial = b""
        self._changed = asyncio.Event()
        self._readers: list[asyncio.Task[None]] = []
        self._waiter: asyncio.Task[None] | None = None
        self.exited = asyncio.Event()

    @property
    def workdir(self) -> Path:
        return Path(str(self.spec.get("workingDir") or self.pod.directory))

    def env(self, tty: bool) -> dict[str, str]:
        return container_env(self.spec, tty, self.pod.directory)

    async def start(self) -> None:
        command = [str(a) for a in self.spec.get("command") or ["sleep", "infinity"]]
        self.argv = command + [str(a) for a in self.spec.get("args") or ()]
        self.process, self.master = await spawn(
            self.argv, cwd=self.workdir, env=self.env(self.tty), tty=self.tty, stdin=self.stdin
        )
        if self.master is not None:
            set_window_size(self.master, 80, 24)
            self._readers.append(
                asyncio.create_task(read_terminal(self.master, lambda c: self._output(1, c)))
            )
        else:
            assert self.process.stdout is not None
            assert self.process.stderr is not None
            self._readers += [
                asyncio.create_task(read_pipe(self.process.stdout, lambda c: self._output(1, c))),
                asyncio.create_task(read_pipe(self.process.stderr, lambda c: self._output(2, c))),
            ]
        self._waiter = asyncio.create_task(self._wait())

    def _output(self, channel: int, chunk: bytes) -> None:
        for queue in self.attached:
            queue.put_nowait((channel, chunk))
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        now = rfc3339()
        self.lines.extend((now, line + b"\n") for line in complete)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        """Return when the log grows or the process exits."""
        await self._changed.wait()

    async def _wait(self) -> None:
        assert self.process is not None
        code = await self.process.wait()
        if self._readers:
            await asyncio.wait(self._readers, timeout=5)
        for reader in self._readers:
            reader.cancel()
        if self._partial:
            self.lines.append((rfc3339(), self._partial))
            self._partial = b""
        self.exit_code = code if code >= 0 else 128 - code
        if self.master is not None:
            os.close(self.master)
            self.master = None
        for queue in self.attached:
            queue.put_nowait(None)
        self.exited.set()
        self._notify()
        self.pod.container_exited()

    def write_stdin(self, data: bytes) -> None:
        """Input for the main process (from ``kubectl attach``)."""
        if self.master is not None:
            os.write(self.master, data)
        elif self.process is not None and self.process.stdin is not None:
            self.process.stdin.write(data)

    def close_stdin(self) -> None:
        if self.master is None and self.process is not None and self.process.stdin is not None:
            self.process.stdin.close()

    async def stop(self) -> None:
        if self.process is not None:
            await kill(self.process)
            await self.exited.wait()


class Pod:
    """The processes of one Pod object."""

    def __init__(self, runtime: PodRuntime, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        self.runtime = runtime
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.directory = runtime.directory / self.namespace / self.name
        self.ports = _port_map((meta.get("annotations") or {}).get(PORTS, ""))
        spec = obj.get("spec") or {}
        self.containers = {
            c.get("name", ""): Container(self, c) for c in spec.get("containers") or ()
        }
        self.deleted = False

    def local_port(self, port: int) -> int:
        return self.ports.get(port, port)

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        started = rfc3339()
        for container in self.containers.values():
            try:
                await container.start()
            except OSError as e:  # e.g. the command does not exist
                await self.stop()
                self.runtime.update(self, status=_failed_to_start(container.name, e))
                return
        self.runtime.update(
            self,
            spec={"nodeName": NODE_NAME},
            status={
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}],
                "startTime": started,
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": started}
                    for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
                ],
                "containerStatuses": [
                    self._container_status(c, {"running": {"startedAt": started}})
                    for c in self.containers.values()
                ],
            },
        )

    def _container_status(self, container: Container, state: dict[str, Any]) -> dict[str, Any]:
        image = str(container.spec.get("image") or "")
        running = "running" in state
        return {
            "name": container.name,
            "image": image,
            "imageID": image,
            "containerID": f"local://{container.process.pid if container.process else 0}",
            "ready": running,
            "started": running,
            "restartCount": 0,
            "state": state,
        }

    def container_exited(self) -> None:
        if self.deleted or not all(c.exited.is_set() for c in self.containers.values()):
            return
        codes = [c.exit_code for c in self.containers.values()]
        finished = rfc3339()
        self.runtime.update(
            self,
            status={
                "phase": "Succeeded" if not any(codes) else "Failed",
                "conditions": [
                    {"type": t, "status": "False", "lastTransitionTime": finished}
                    for t in ("Ready", "ContainersReady")
                ],
                "containerStatuses": [
                    self._container_status(
                        c,
                        {
                            "terminated": {
                                "exitCode": c.exit_code,
                                "reason": "Completed" if c.exit_code == 0 else "Error",
                                "finishedAt": finished,
                            }
                        },
                    )
                    for c in self.containers.values()
                ],
            },
        )

    async def stop(self) -> None:
        self.deleted = True
        await asyncio.gather(*(c.stop() for c in self.containers.values()))


def _failed_to_start(container: str, error: OSError) -> dict[str, Any]:
    message = f"failed to start container {container!r}: {error}"
    return {
        "phase": "Failed",
        "message": message,
        "containerStatuses": [
            {
                "name": container,
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {
                    "terminated": {"exitCode": 128, "reason": "StartError", "message": message}
                },
            }
        ],
    }


def _port_map(value: str) -> dict[int, int]:
    ports: dict[int, int] = {}
    for item in value.split(","):
        container, sep, local = item.strip().partition("=")
        if sep and container.strip().isdigit() and local.strip().isdigit():
            ports[int(container)] = int(local)
    return ports


class PodRuntime:
    """Runs the annotated Pods of ``store`` (see the module docstring); ``close()`` kills
    every process. Must be created on the emulator's running loop."""

    def __init__(self, store: ObjectStore, directory: Path) -> None:
        self.store = store
        self.directory = directory
        self.pods: dict[tuple[str, str], Pod] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._streams: set[asyncio.Task[Any]] = set()  # open sessions that outlive processes
        self._cursor = store.watch_history.cursor_after(store.resource_version)
        self._closed = False
        store.listeners.append(self._on_change)

    def _on_change(self) -> None:
        events, self._cursor = self.store.watch_history.read(self._cursor)
        for event in events:
            if event.group_plural != ("", "pods") or self._closed:
                continue
            meta = event.obj["metadata"]
            key = (meta["namespace"], meta["name"])
            pod = self.pods.get(key)
            if (
                event.type == "ADDED"
                and (meta.get("annotations") or {}).get(LOCAL_PROCESS) == "true"
            ):
                pod = self.pods[key] = Pod(self, event.obj)
                self._spawn(pod.start())
            elif event.type == "DELETED" and pod is not None and pod.uid == meta["uid"]:
                del self.pods[key]
                self._spawn(pod.stop())

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def update(
        self, pod: Pod, *, status: dict[str, Any], spec: dict[str, Any] | None = None
    ) -> None:
        """Write what the kubelet reports (nothing if the Pod is gone or replaced)."""
        rtype = self.store.find_type("", "v1", "pods")
        try:
            current = self.store.get(rtype, pod.namespace, pod.name)
            if current["metadata"]["uid"] != pod.uid:
                return
            if spec:
                self.store.patch(rtype, pod.namespace, pod.name, {"spec": spec}, "merge")
            self.store.patch(
                rtype, pod.namespace, pod.name, {"status": status}, "merge", subresource="status"
            )
        except ApiError as e:
            if e.code != 404:
                raise

    def pod(self, namespace: str, name: str) -> Pod:
        """The running pod, or the 400 kube-apiserver gives for a pod on no node."""
        rtype = self.store.find_type("", "v1", "pods")
        obj = self.store.get(rtype, namespace, name)  # 404 when there is no such Pod
        pod = self.pods.get((namespace, name))
        if pod is None or pod.uid != obj["metadata"]["uid"]:
            raise ApiError.bad_request(f"pod {name} does not have a host assigned")
        return pod

    def container(self, namespace: str, name: str, container: str | None) -> Container:
        """The named container (the pod's only or first one when None), or 400."""
        pod = self.pod(namespace, name)
        if not container:
            if not pod.containers:
                raise ApiError.bad_request(f"pod {name} has no containers")
            return next(iter(pod.containers.values()))
        found = pod.containers.get(container)
        if found is None:
            raise ApiError.bad_request(f"container {container} is not valid for pod {name}")
        return found

    @contextlib.contextmanager
    def stream(self) -> Iterator[None]:
        """Mark the current task as a session ``close()`` ends (a port-forward, which would
        otherwise stay open as long as its client)."""
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        try:
            yield
        finally:
            self._streams.discard(task)

    async def close(self) -> None:
        for task in self._streams:
            task.cancel()
        self._closed = True
        with contextlib.suppress(ValueError):
            self.store.listeners.remove(self._on_change)
        pods, self.pods = list(self.pods.values()), {}
        await asyncio.gather(*(p.stop() for p in pods))
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)
