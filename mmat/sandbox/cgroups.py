"""Per-sandbox cgroups: one freezer, one memory budget and one pids budget for every process of a sandbox.

Each sandbox gets its own child cgroup below the parent process's own cgroup in every hierarchy it
uses, so limits nest inside whatever the parent itself runs under (a container, a systemd slice).
Which hierarchy serves which function is chosen per function, cgroup v2 first:

* **freeze** -- v2 ``cgroup.freeze`` (core, needs no controller) else the v1 ``freezer`` controller;
* **memory** -- v2 ``memory.max`` when the parent's cgroup already delegates ``memory`` to its children
  (we never change a parent's ``cgroup.subtree_control``: that would change the host), else the v1
  ``memory`` controller (``memory.limit_in_bytes``, plus ``memsw`` so swap cannot extend it);
* **pids** -- v2 ``pids.max`` on the same terms, else the v1 ``pids`` controller.

A function is unavailable when no hierarchy offers it or its directory is not writable (not root and
nothing delegated): the caller falls back (SIGSTOP freezing, per-process rlimits) and says so.
Nothing here follows a path the sandbox controls: cgroupfs is not visible inside the sandbox.
"""

from __future__ import annotations

import errno
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Hierarchy", "SandboxCgroup", "hierarchies", "own_cgroup_dir", "cgroup_support"]

_MOUNTINFO = "/proc/self/mountinfo"
_SELF_CGROUP = "/proc/self/cgroup"
# How long remove() waits for the last tasks of a killed sandbox to leave (rmdir says EBUSY until then).
_REMOVE_WAIT_S = 2.0
# How long a freeze may take before the sandbox counts as unfreezable (the caller restarts it).
FREEZE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Hierarchy:
    version: int  # 1 or 2
    mountpoint: str
    root: str  # the mount's root inside the hierarchy (usually "/")
    controllers: frozenset[str]  # v1: the mount's controllers; v2: empty (read per directory)


def hierarchies() -> list[Hierarchy]:
    """Every cgroup mount of this mount namespace (first mount of each hierarchy wins)."""
    found: list[Hierarchy] = []
    seen: set[tuple[int, frozenset[str]]] = set()
    try:
        lines = Path(_MOUNTINFO).read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        root, mountpoint = _unescape(fields[3]), _unescape(fields[4])
        if tail[0] == "cgroup2":
            key: tuple[int, frozenset[str]] = (2, frozenset())
            hier = Hierarchy(2, mountpoint, root, frozenset())
        else:
            opts = set(tail[2].split(","))
            ctrls = frozenset(o for o in opts if o not in ("rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec", "clone_children") and "=" not in o)
            named = frozenset(o for o in opts if o.startswith("name="))
            key = (1, ctrls | named)
            hier = Hierarchy(1, mountpoint, root, ctrls)
        if key not in seen:
            seen.add(key)
            found.append(hier)
    return found


def _unescape(s: str) -> str:
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def own_cgroup_dir(h: Hierarchy) -> Path | None:
    """The directory of this process's own cgroup in hierarchy h (None when it is not visible here)."""
    try:
        lines = Path(_SELF_CGROUP).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if h.version == 2 and parts[0] == "0" and ctrls == "":
            break
        if h.version == 1 and ctrls and h.controllers and h.controllers <= set(ctrls.split(",")):
            break
    else:
        return None
    rel = os.path.relpath(path, h.root) if h.root != "/" else path.lstrip("/")
    if rel.startswith(".."):
        return None  # our cgroup lies outside what this mount shows
    d = Path(h.mountpoint) / rel if rel not in ("", ".") else Path(h.mountpoint)
    return d if d.is_dir() else None


def _v2_enabled(d: Path) -> set[str]:
    try:
        return set((d / "cgroup.subtree_control").read_text().split())
    except OSError:
        return set()


def _candidates(function: str) -> list[tuple[Hierarchy, Path]]:
    """(hierarchy, parent dir) pairs that could serve function, best first."""
    out: list[tuple[Hierarchy, Path]] = []
    hs = hierarchies()
    for h in (x for x in hs if x.version == 2):
        d = own_cgroup_dir(h)
        if d is None:
            continue
        if function == "freeze" or function in _v2_enabled(d):
            out.append((h, d))
    v1_name = {"freeze": "freezer", "memory": "memory", "pids": "pids"}[function]
    for h in (x for x in hs if x.version == 1 and v1_name in x.controllers):
        d = own_cgroup_dir(h)
        if d is not None:
            out.append((h, d))
    return out


def cgroup_support() -> dict[str, str]:
    """For `mmat doctor`: function -> where it would live, or why it is unavailable (no side effects
    beyond a test mkdir/rmdir of an empty child cgroup)."""
    report: dict[str, str] = {}
    for function in ("freeze", "memory", "pids"):
        cands = _candidates(function)
        if not cands:
            report[function] = "unavailable: no cgroup hierarchy offers it here"
            continue
        why = []
        for h, d in cands:
            probe = d / f"mmat-probe-{os.getpid()}-{secrets.token_hex(4)}"
            try:
                probe.mkdir()
            except OSError as e:
                why.append(f"{d} not writable ({e.strerror})")
                continue
            probe.rmdir()
            report[function] = f"cgroup v{h.version} at {d}"
            break
        else:
            report[function] = "unavailable: " + "; ".join(why)
    return report


@dataclass
class SandboxCgroup:
    """The child cgroups of one sandbox (one worker lifetime). Create with SandboxCgroup.create()."""

    freeze_kind: str | None = None  # "cgroup2" | "cgroup1" | None (no writable freezer)
    freeze_dir: str | None = None
    memory_kind: str | None = None
    memory_dir: str | None = None
    pids_kind: str | None = None
    pids_dir: str | None = None
    dirs: list[str] = field(default_factory=list)  # every directory we created (rmdir order: reverse)
    unavailable: dict[str, str] = field(default_factory=dict)  # function -> why
    _fds: dict[str, int] = field(default_factory=dict)

    @classmethod
    def create(cls, *, memory_bytes: int, max_tasks: int, tag: str) -> SandboxCgroup:
        cg = cls()
        by_dir: dict[str, str] = {}  # parent dir -> child dir, so one v2 child serves all v2 functions
        for function in ("freeze", "memory", "pids"):
            why: list[str] = []
            for h, parent in _candidates(function):
                child = by_dir.get(str(parent))
                if child is None:
                    path = parent / f"mmat-{tag}-{secrets.token_hex(4)}"
                    try:
                        path.mkdir(mode=0o755)
                    except OSError as e:
                        why.append(f"{parent}: {e.strerror}")
                        continue
                    child = str(path)
                    by_dir[str(parent)] = child
                    cg.dirs.append(child)
                try:
                    cg._configure(function, h.version, Path(child), memory_bytes, max_tasks)
                except OSError as e:
                    why.append(f"{child}: {e.strerror}")
                    continue
                kind = f"cgroup{h.version}"
                setattr(cg, f"{function}_kind", kind)
                setattr(cg, f"{function}_dir", child)
                break
            else:
                cg.unavailable[function] = "; ".join(why) or "no cgroup hierarchy offers it here"
        return cg

    @staticmethod
    def _configure(function: str, version: int, d: Path, memory_bytes: int, max_tasks: int) -> None:
        if function == "freeze":
            if not (d / ("cgroup.freeze" if version == 2 else "freezer.state")).exists():
                raise OSError(errno.ENOENT, "no freezer files")
        elif function == "memory":
            if version == 2:
                (d / "memory.max").write_text(str(memory_bytes))
                if (d / "memory.swap.max").exists():
                    (d / "memory.swap.max").write_text("0")
            else:
                (d / "memory.limit_in_bytes").write_text(str(memory_bytes))
                if (d / "memory.memsw.limit_in_bytes").exists():
                    (d / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
        elif function == "pids":
            (d / "pids.max").write_text(str(max_tasks))

    # --- what the launcher needs ------------------------------------------------------------------
    def launcher_spec(self) -> dict[str, Any]:
        """Files the launcher opens before it leaves the host's filesystem behind."""
        join = sorted({f"{d}/cgroup.procs" for d in (self.freeze_dir, self.memory_dir, self.pids_dir) if d})
        # the parent freezes cgroups itself; the launcher only needs the v1 files to kill a frozen sandbox
        freezer: dict[str, Any] = {"kind": "signal"}
        if self.freeze_kind == "cgroup2":
            freezer = {"kind": "cgroup2"}
        elif self.freeze_kind == "cgroup1":
            freezer = {"kind": "cgroup1", "state": f"{self.freeze_dir}/freezer.state", "procs": f"{self.freeze_dir}/cgroup.procs"}
        return {"join": join, "freezer": freezer}

    # --- freezing (done by the parent itself: one write, no process to wake) -----------------------
    def _fd(self, name: str) -> int:
        if name not in self._fds:
            self._fds[name] = os.open(f"{self.freeze_dir}/{name}", (os.O_RDONLY if name == "cgroup.events" else os.O_RDWR) | os.O_CLOEXEC)
        return self._fds[name]

    def freeze(self) -> bool:
        """Stop every task of the cgroup; True once the kernel reports all of them frozen (each task
        freezes itself when it next runs, so this waits for the busy ones to be scheduled)."""
        deadline = time.monotonic() + FREEZE_TIMEOUT_S
        if self.freeze_kind == "cgroup2":
            # (cgroup.events also notifies, but at most every 10 ms: too slow to wait on)
            state, done = self._fd("cgroup.events"), (lambda d: b"frozen 1" in d)
            os.pwrite(self._fd("cgroup.freeze"), b"1", 0)
        else:
            state, done = self._fd("freezer.state"), (lambda d: d.startswith(b"FROZEN"))
            os.pwrite(state, b"FROZEN", 0)
        spins, pause = 0, 0.0002
        while not done(os.pread(state, 4096, 0)):
            if time.monotonic() > deadline:
                return False
            spins += 1
            if spins < 20:
                os.sched_yield()  # let the sandbox's busy tasks run into the freezer
            else:  # a loaded machine may take milliseconds to schedule them: poll less and less often
                time.sleep(pause)
                pause = min(pause * 1.5, 0.002)
        return True

    def thaw(self) -> None:
        if self.freeze_kind == "cgroup2":
            os.pwrite(self._fd("cgroup.freeze"), b"0", 0)
        else:
            os.pwrite(self._fd("freezer.state"), b"THAWED", 0)

    # --- accounting --------------------------------------------------------------------------------
    def oom_kills(self) -> int:
        """How many processes the kernel killed for this sandbox's memory limit so far."""
        if self.memory_dir is None:
            return 0
        name = "memory.events" if self.memory_kind == "cgroup2" else "memory.oom_control"
        try:
            if name not in self._fds:  # kept open: read twice per step
                self._fds[name] = os.open(f"{self.memory_dir}/{name}", os.O_RDONLY | os.O_CLOEXEC)
            for line in os.pread(self._fds[name], 4096, 0).decode().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def memory_peak(self) -> int:
        if self.memory_dir is None:
            return 0
        name = "memory.peak" if self.memory_kind == "cgroup2" else "memory.max_usage_in_bytes"
        try:
            return int(Path(self.memory_dir, name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def remove(self) -> None:
        """rmdir every child cgroup (after the sandbox's processes are gone)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        deadline = time.monotonic() + _REMOVE_WAIT_S
        for d in reversed(self.dirs):
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        break
                    time.sleep(0.005)
        self.dirs = []
