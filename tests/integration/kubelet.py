"""A kubelet on this machine, for tests: runs the containers of a Deployment the operator
generated the way a kubelet would, so a test learns whether the pods really start.

::

    PodNetwork()            one network namespace for the pods of a test (loopback up): each
                            pod's /etc/hosts maps the Services' DNS names to 127.0.0.1 there
    Pod(network, deployment, objects, workdir, hosts=...)
        volumes             prepared on the host under ``workdir`` as the kubelet does:
                            emptyDir 0777, a PersistentVolumeClaim's root 0755 (kept across
                            pods: ``workdir/pv/<claim>``), Secret/ConfigMap in the atomic-writer
                            layout (``..data`` symlinks, ``defaultMode``); then the fsGroup
                            ownership (SetVolumeOwnership: group fsGroup, setgid directories,
                            group rw, or r for Secret/ConfigMap), so a volume root is
                            root:10001 2775/2777 and not the limen user's
        run_init()          every initContainer, in order, to completion (exit 0 or an error)
        start(name)         the container as a process (logs in ``workdir/logs``)
        probe(c, kind)      its readinessProbe/livenessProbe: tcpSocket, or httpGet (HTTPS
                            without verification, as the kubelet); True when it passes

How a container runs (root needed)::

    nsenter --net=<the PodNetwork> unshare --mount --propagation private sh -c '
      overlayfs (upper in workdir) on the deepest existing parent of each missing mount point
        (/etc for /etc/limen/..., /var/lib for /var/lib/limen) and on each directory on the way
        to the Limen installation that others cannot traverse (/root, for a pyenv interpreter
        under /root/.pyenv): the installation is used where it is, no copy
      mount -o remount,bind,ro / and the overlays      (readOnlyRootFilesystem: true)
      mount --bind each volumeMount (subPath: that file; remount ro when readOnly); /etc/hosts
      exec setpriv --reuid runAsUser --regid runAsGroup --groups fsGroup --no-new-privs
                   --inh-caps -all --bounding-set -all
           env -i <the image's env, the spec's env (valueFrom Secret/ConfigMap keys, and
                   fieldRef status.podIP: 127.0.0.1, the address of the pods' one network)>
           <the installation's limen> <args>'

The image is this installation: its entrypoint ``limen`` is the console script next to the
running interpreter, its environment the Dockerfile's (PATH, PYTHONDONTWRITEBYTECODE,
PYTHONUNBUFFERED, LIMEN_DATA_DIR, HOME), uid:gid 10001:10001. Used by
``tests/integration/test_operator_pods_run.py``; :func:`unavailable` says why this machine
cannot run pods (not root, a tool missing), for a skip.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any

__all__ = ["IMAGE_ENTRYPOINT", "Container", "Pod", "PodNetwork", "http_status", "service_names",
           "unavailable"]

IMAGE_ENTRYPOINT = Path(sys.executable).parent / "limen"
"""The image's ``ENTRYPOINT ["limen"]``: this installation's console script."""
IMAGE_USER = (10001, 10001)
"""The Dockerfile's ``USER 10001:10001``."""
IMAGE_WORKDIR = "/var/lib/limen"
IMAGE_ENV = {
    "PATH": f"{IMAGE_ENTRYPOINT.parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
            "/sbin:/bin",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "LIMEN_DATA_DIR": "/var/lib/limen/data",
    "HOME": "/var/lib/limen",  # the limen user's home in the image's /etc/passwd
}
"""The Dockerfile's ``ENV`` (its /opt/limen/bin is this installation's bin directory)."""
POD_IP = "127.0.0.1"
"""Every pod's IP (``status.podIP``): the pods of a test share one network namespace."""
_TOOLS = ("unshare", "nsenter", "setpriv", "mount", "ip", "env", "sh")
_CLONE_NEWNET = 0x40000000
_RW_MASK, _RO_MASK, _EXEC_MASK = 0o660, 0o440, 0o110  # the kubelet's SetVolumeOwnership
_ATOMIC_DIR = "..2024_05_01_00_00_00.000000001"


def unavailable() -> str | None:
    """Why pods cannot run on this machine (None when they can)."""
    if sys.platform != "linux":
        return "pods need Linux namespaces"
    if os.geteuid() != 0:
        return "running pods as the kubelet does needs root (mount namespaces, setpriv)"
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    if "overlay" not in Path("/proc/filesystems").read_text(encoding="utf-8"):
        return "the kernel has no overlayfs"
    trial = subprocess.run(["unshare", "--mount", "--net", "true"], capture_output=True,
                           text=True, check=False, timeout=30)
    if trial.returncode != 0:
        return f"unshare cannot make namespaces here: {trial.stderr.strip()}"
    return None


def service_names(service: Mapping[str, Any]) -> list[str]:
    """The DNS names of a Service in the cluster (``name``, ``name.ns``, ``.svc``,
    ``.svc.cluster.local``)."""
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    return [name, f"{name}.{namespace}", f"{name}.{namespace}.svc",
            f"{name}.{namespace}.svc.cluster.local"]


class PodNetwork:
    """A network namespace with loopback up, held by a ``cat`` waiting on its stdin; the
    pods of a test share it (Service names resolve to 127.0.0.1 in their /etc/hosts)."""

    def __init__(self) -> None:
        self._holder = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c", "ip link set lo up && echo up && exec cat"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline()
        if line.strip() != "up":
            self.close()
            raise RuntimeError("the pod network namespace did not come up")
        self.path = f"/proc/{self._holder.pid}/ns/net"

    def close(self) -> None:
        if self._holder.stdin is not None:
            self._holder.stdin.close()
        try:
            self._holder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._holder.kill()
            self._holder.wait()
        if self._holder.stdout is not None:
            self._holder.stdout.close()

    def __enter__(self) -> PodNetwork:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def connect(self, port: int, timeout: float = 2.0) -> socket.socket:
        """A TCP connection to 127.0.0.1:``port`` inside the namespace (the socket is made
        by a thread that entered it; OSError when nothing answers)."""
        made: list[socket.socket] = []
        failed: list[BaseException] = []

        def enter_and_make() -> None:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(self.path, os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    failed.append(OSError(ctypes.get_errno(), "setns"))
                    return
                made.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            finally:
                os.close(fd)

        thread = threading.Thread(target=enter_and_make)
        thread.start()
        thread.join()
        if failed:
            raise failed[0]
        sock = made[0]
        sock.settimeout(timeout)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        return sock


class Container:
    """One started container: its process (the ``limen`` process itself: every step of the
    launch execs the next) and its log."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], log: Path,
                 log_file: IO[bytes]) -> None:
        self.name = name
        self.process = process
        self.log = log
        self._log_file = log_file

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (as the kubelet), then SIGKILL after ``timeout``; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()
        return int(self.process.returncode)


class Pod:
    """One pod of ``deployment`` (its template), with the Secrets and ConfigMaps of
    ``objects`` (keyed ``(kind, name)``) for its volumes and env."""

    def __init__(self, network: PodNetwork, deployment: Mapping[str, Any],
                 objects: Mapping[tuple[str, str], Mapping[str, Any]], workdir: Path, *,
                 hosts: Iterable[str] = ()) -> None:
        self.network = network
        self.spec: dict[str, Any] = dict(deployment["spec"]["template"]["spec"])
        self.objects = objects
        self.workdir = workdir
        (workdir / "pods").mkdir(exist_ok=True)
        (workdir / "logs").mkdir(exist_ok=True)
        base, number = str(deployment["metadata"]["name"]), 0
        while True:  # a new pod of the Deployment: new name, new emptyDirs (the PVC stays)
            number += 1
            self.name = f"{base}-{number}"
            self.root = workdir / "pods" / self.name
            with contextlib.suppress(FileExistsError):
                self.root.mkdir()
                break
        self.volumes: dict[str, Path] = {}
        self.readonly_volumes: set[str] = set()
        security = self.spec.get("securityContext") or {}
        self.fs_group: int | None = security.get("fsGroup")
        for volume in self.spec.get("volumes") or ():
            self.volumes[volume["name"]] = self._set_up(volume)
        self.hosts = self.root / "hosts"
        self.hosts.write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n"
                              f"127.0.0.1\t{self.name}\n"
                              + "".join(f"127.0.0.1\t{name}\n" for name in hosts),
                              encoding="utf-8")
        self.hosts.chmod(0o644)
        self.started: list[Container] = []

    # -- containers ----------------------------------------------------------------------------
    def container(self, name: str) -> dict[str, Any]:
        for container in [*self.spec.get("initContainers", ()), *self.spec["containers"]]:
            if container["name"] == name:
                return dict(container)
        raise KeyError(f"pod {self.name} has no container {name}")

    def run_init(self, timeout: float = 60.0) -> None:
        """Every init container, in order, to completion (AssertionError with its log when
        one fails)."""
        for init in self.spec.get("initContainers") or ():
            started = self.start(init["name"])
            try:
                code = started.process.wait(timeout=timeout)
            finally:
                started.stop()
            assert code == 0, (f"init container {init['name']} of {self.name} exited {code}:\n"
                               f"{started.output()}")

    def start(self, name: str) -> Container:
        container = self.container(name)
        log = self.workdir / "logs" / f"{self.name}-{name}.log"
        log_file = log.open("ab")
        process = subprocess.Popen(
            ["nsenter", f"--net={self.network.path}", "--", "unshare", "--mount",
             "--propagation", "private", "--", "sh", "-c", self._script(container)],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True)
        started = Container(name, process, log, log_file)
        self.started.append(started)
        return started

    def stop(self) -> dict[str, int]:
        """Stop every container still running; their exit codes by name."""
        return {c.name: c.stop() for c in reversed(self.started)}

    def host_path(self, name: str, path: str) -> Path:
        """Where the file ``path`` of container ``name`` lives on the host (through the
        volumeMount holding it)."""
        target = PurePosixPath(path)
        for mount in self.container(name).get("volumeMounts") or ():
            base = PurePosixPath(mount["mountPath"])
            if target == base or base in target.parents:
                return self.volumes[mount["name"]].joinpath(
                    mount.get("subPath", ""), *target.relative_to(base).parts)
        raise KeyError(f"{path} is on no volume of {self.name}/{name}")

    # -- probes --------------------------------------------------------------------------------
    def probe(self, container: str, kind: str) -> bool:
        """Run the container's ``kind`` probe (readinessProbe, livenessProbe) once, as the
        kubelet: tcpSocket connects; httpGet expects a status in 200..399 (HTTPS: the
        certificate is not verified)."""
        spec = self.container(container)[kind]
        action = spec.get("tcpSocket") or spec.get("httpGet")
        if action is None:
            raise NotImplementedError(f"{kind}: only tcpSocket and httpGet probes are run here")
        port = self._port(container, action["port"])
        try:
            sock = self.network.connect(port)
        except OSError:
            return False
        with sock:
            if "tcpSocket" in spec:
                return True
            context = None
            if action.get("scheme", "HTTP").upper() == "HTTPS":
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE  # the kubelet does not verify probes
            status = http_status(sock, action.get("path", "/"), context)
            return status is not None and 200 <= status < 400

    def _port(self, container: str, port: int | str) -> int:
        if isinstance(port, int):
            return port
        for declared in self.container(container).get("ports") or ():
            if declared.get("name") == port:
                return int(declared["containerPort"])
        raise KeyError(f"container {container} declares no port {port}")

    # -- volumes -------------------------------------------------------------------------------
    def _set_up(self, volume: Mapping[str, Any]) -> Path:
        name = str(volume["name"])
        path: Path
        if "emptyDir" in volume:
            path = self.root / "volumes" / name
            path.mkdir(parents=True)
            path.chmod(0o777)  # the kubelet's emptyDir mode, umask bypassed
            self._own(path, readonly=False)
        elif "persistentVolumeClaim" in volume:
            path = self.workdir / "pv" / volume["persistentVolumeClaim"]["claimName"]
            if not path.exists():
                path.mkdir(parents=True)
                path.chmod(0o755)  # a fresh filesystem's root
            self._own(path, readonly=False)  # at every pod start (fsGroupChangePolicy Always)
        elif "secret" in volume:
            source = self.objects[("Secret", volume["secret"]["secretName"])]
            data = {k: base64.b64decode(v) for k, v in (source.get("data") or {}).items()}
            path = self._atomic(name, data, volume["secret"].get("defaultMode", 0o644))
            self.readonly_volumes.add(name)
        elif "configMap" in volume:
            source = self.objects[("ConfigMap", volume["configMap"]["name"])]
            text = {k: v.encode() for k, v in (source.get("data") or {}).items()}
            path = self._atomic(name, text, volume["configMap"].get("defaultMode", 0o644))
            self.readonly_volumes.add(name)
        else:
            raise NotImplementedError(f"volume {name}: {sorted(volume)}")
        return path

    def _atomic(self, name: str, files: Mapping[str, bytes], mode: int) -> Path:
        """The atomic writer's layout: ``<ts>/key`` files, ``..data -> <ts>``,
        ``key -> ..data/key``."""
        path = self.root / "volumes" / name
        (path / _ATOMIC_DIR).mkdir(parents=True)
        path.chmod(0o755)
        (path / _ATOMIC_DIR).chmod(0o755)
        for key, value in files.items():
            target = path / _ATOMIC_DIR / key
            target.write_bytes(value)
            target.chmod(mode)
            (path / key).symlink_to(f"..data/{key}")
        (path / "..data").symlink_to(_ATOMIC_DIR)
        self._own(path, readonly=True)
        return path

    def _own(self, root: Path, *, readonly: bool) -> None:
        """The kubelet's SetVolumeOwnership: every entry gets group fsGroup and the group
        bits (rw, or r for read-only volumes); directories also setgid and x."""
        if self.fs_group is None:
            return
        for directory, dirs, files in os.walk(root):
            for entry in [directory, *(os.path.join(directory, n) for n in (*dirs, *files))]:
                info = os.lstat(entry)
                if stat.S_ISLNK(info.st_mode):
                    continue
                os.chown(entry, -1, self.fs_group)
                mask = _RO_MASK if readonly else _RW_MASK
                if stat.S_ISDIR(info.st_mode):
                    mask |= stat.S_ISGID | _EXEC_MASK
                os.chmod(entry, stat.S_IMODE(info.st_mode) | mask)

    # -- the launch script ---------------------------------------------------------------------
    def _script(self, container: Mapping[str, Any]) -> str:
        mounts = list(container.get("volumeMounts") or ())
        overlays = sorted(_overlays_needed(mounts), key=lambda p: len(p.parts))
        lines = ["set -e"]
        for index, lower in enumerate(overlays):
            upper, work = (self.root / f"overlay-{index}" / part for part in ("upper", "work"))
            if not upper.exists():
                upper.mkdir(parents=True)
                work.mkdir()
            upper.chmod(0o755)
            lines.append(f"mount -t overlay overlay -o lowerdir={lower},upperdir={upper},"
                         f"workdir={work} {lower}")
        for mount in mounts:
            target = shlex.quote(mount["mountPath"])
            if mount.get("subPath"):
                lines.append(f"mkdir -p \"$(dirname {target})\" && touch {target}")
            else:
                lines.append(f"mkdir -p {target}")
        security = {**(self.spec.get("securityContext") or {}),
                    **(container.get("securityContext") or {})}
        # the installation (a checkout under /tmp, say) must stay visible under a pod volume
        # mounted over one of its parents (the emptyDir on /tmp): staged aside, put back after
        hidden = [p for p in _installation_roots()
                  if any(_is_within(p, m["mountPath"]) for m in mounts)]
        for index, path in enumerate(hidden):
            stage = f"/dev/shm/limen-installation-{index}"
            lines.append(f"mkdir -p {stage} && mount --bind {shlex.quote(str(path))} {stage}")
        # the volumes first: a bind mount keeps the read-only flag of the mount it comes from
        lines.append(f"mount --bind {shlex.quote(str(self.hosts))} /etc/hosts")
        # a mount over a directory holding the sources (an emptyDir on /tmp) goes last
        hiding = [m for m in mounts if _is_within(self.workdir, m["mountPath"])]
        for mount in [*(m for m in mounts if m not in hiding), *hiding]:
            source = self.volumes[mount["name"]]
            if mount.get("subPath"):
                source = Path(os.path.realpath(source / mount["subPath"]))
            target = shlex.quote(mount["mountPath"])
            lines.append(f"mount --bind {shlex.quote(str(source))} {target}")
            if mount.get("readOnly") or mount["name"] in self.readonly_volumes:
                lines.append(f"mount -o remount,bind,ro {target}")
        for index, path in enumerate(hidden):
            target = shlex.quote(str(path))
            lines.append(f"mkdir -p {target} && mount --bind /dev/shm/limen-installation-{index}"
                         f" {target} && mount -o remount,bind,ro {target}")
        if security.get("readOnlyRootFilesystem"):
            for path in [Path("/"), *overlays]:
                lines.append(f"mount -o remount,bind,ro {shlex.quote(str(path))}")
        user, group = IMAGE_USER
        user = int(security.get("runAsUser", user))
        group = int(security.get("runAsGroup", group))
        groups = [g for g in [self.fs_group, *security.get("supplementalGroups", ())]
                  if g is not None]
        privileges = ["setpriv", f"--reuid={user}", f"--regid={group}",
                      f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups",
                      "--inh-caps=-all", "--bounding-set=-all"]
        if security.get("allowPrivilegeEscalation") is False:
            privileges.append("--no-new-privs")
        env = {**IMAGE_ENV, "HOSTNAME": self.name, **self._env(container)}
        command = [*privileges, "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                   *(container.get("command") or [str(IMAGE_ENTRYPOINT)]),
                   *(container.get("args") or ())]
        workdir = shlex.quote(container.get("workingDir") or IMAGE_WORKDIR)
        lines.append(f"cd {workdir} 2>/dev/null || cd /")
        lines.append("exec " + " ".join(shlex.quote(part) for part in command))
        return "\n".join(lines)

    def _env(self, container: Mapping[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in container.get("env") or ():
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            ref = item["valueFrom"]
            if "secretKeyRef" in ref:
                secret = self.objects[("Secret", ref["secretKeyRef"]["name"])]
                env[item["name"]] = base64.b64decode(
                    secret["data"][ref["secretKeyRef"]["key"]]).decode()
            elif "configMapKeyRef" in ref:
                config_map = self.objects[("ConfigMap", ref["configMapKeyRef"]["name"])]
                env[item["name"]] = str(config_map["data"][ref["configMapKeyRef"]["key"]])
            elif ref.get("fieldRef", {}).get("fieldPath") == "status.podIP":
                env[item["name"]] = POD_IP  # the downward API: the pods share one network
            else:
                raise NotImplementedError(f"env {item['name']}: {sorted(ref)}")
        return env


def _overlays_needed(mounts: Sequence[Mapping[str, Any]]) -> set[Path]:
    """The host directories to cover with an overlay: the deepest existing parent of each
    missing mount point, and each directory on the way to the installation that others
    cannot traverse."""
    needed: set[Path] = set()
    for mount in mounts:
        path = Path(mount["mountPath"])
        if path.exists():
            continue
        parent = path.parent
        while not parent.exists():
            parent = parent.parent
        if parent == Path("/"):
            raise NotImplementedError(f"mount point {path}: nothing to overlay but /")
        needed.add(parent)
    import limen

    installation = [Path(sys.executable), Path(os.path.realpath(sys.executable)),
                    Path(sys.prefix), Path(sys.base_prefix), Path(limen.__file__).parent]
    for path in installation:
        for parent in path.parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                needed.add(parent)
    return needed


def _installation_roots() -> list[Path]:
    """The directories the image's ``limen`` runs from (the virtualenv, the sources of an
    editable install and the CRDs beside them, the interpreter's prefix), outermost only."""
    import limen
    from limen.api.schemas import crd_dir

    candidates = sorted({Path(sys.prefix), Path(sys.base_prefix),
                         Path(os.path.realpath(sys.executable)).parent.parent,
                         Path(limen.__file__).resolve().parent.parent, crd_dir().resolve()},
                        key=lambda p: len(p.parts))
    roots: list[Path] = []
    for path in candidates:
        if not any(path == root or root in path.parents for root in roots):
            roots.append(path)
    return roots


def _is_within(path: Path, directory: str) -> bool:
    return Path(directory) == path or Path(directory) in path.parents


def http_status(sock: socket.socket, path: str, context: ssl.SSLContext | None = None,
                server_hostname: str | None = None) -> int | None:
    """``GET path`` on a connected socket (through TLS with ``context``): the response's
    status, or None when the exchange fails."""
    stream: socket.socket = sock
    try:
        if context is not None:
            stream = context.wrap_socket(sock, server_hostname=server_hostname)
        stream.sendall(f"GET {path} HTTP/1.1\r\nHost: {server_hostname or 'probe'}\r\n"
                       "User-Agent: kube-probe/1.30\r\nConnection: close\r\n\r\n".encode())
        parts = _read_line(stream.recv).split()
    except (OSError, ssl.SSLError):
        return None
    finally:
        if stream is not sock:
            with contextlib.suppress(OSError):
                stream.close()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


def _read_line(recv: Callable[[int], bytes]) -> str:
    data = b""
    while b"\r\n" not in data and len(data) < 8192:
        chunk = recv(1024)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1")
