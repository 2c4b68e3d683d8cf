"""The sandbox worker: runs model-written steps in one persistent namespace.

This file is copied into the sandbox's root (/.mmat/worker.py) and started there as
``python -I -S -B /.mmat/worker.py`` by the launcher, already inside the namespaces, as an
unprivileged uid, under rlimits and seccomp. It imports only the standard library; mmat itself is
not visible inside the sandbox.

Protocol (JSON lines): the parent writes on fd 3 (``init``, ``run``, ``tool_result``), the worker
writes on fd 4 (``ready``, ``tool``, ``done``). Sandboxed code can touch these fds too; the parent
validates every line, so the worst it can do is fail its own step.
"""

import builtins
import io
import json
import linecache
import math
import os
import random
import resource
import signal
import sys
import threading
import time
import traceback

IN_FD, OUT_FD = 3, 4
WORKER_FILE = __file__
MY_PID = os.getpid()
# One tool call on the channel at a time: threads started by the model's code may call tools too.
_RPC_LOCK = threading.Lock()
MAX_TRACEBACK_FRAMES = 8
MAX_FINAL_ANSWER_CHARS = 100_000

# Private references: model code that monkeypatches json/os must not be able to change how the
# worker talks to the parent (it can still break its own channel; the parent survives that).
_dumps, _loads = json.dumps, json.loads
_write, _getpid, _kill, _waitpid = os.write, os.getpid, os.kill, os.waitpid
_extract_tb, _format_list, _format_exc_only = traceback.extract_tb, traceback.format_list, traceback.format_exception_only


class ToolError(Exception):
    """A tool call failed. The message says why; fix the arguments or try another tool."""


class _FinalAnswer(BaseException):
    """Raised by final_answer() to end the step; a BaseException so `except Exception` does not swallow it."""

    def __init__(self, value):
        super().__init__("final_answer")
        self.value = value


class _CappedText(io.TextIOBase):
    """sys.stdout/sys.stderr of a step: keeps the first `cap` characters and counts the rest."""

    def __init__(self, cap):
        super().__init__()
        self._cap, self._parts, self._kept, self.dropped = cap, [], 0, 0

    @property
    def encoding(self):
        return "utf-8"

    def writable(self):
        return True

    def isatty(self):
        return False

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        room = self._cap - self._kept
        if room > 0:
            self._parts.append(s[:room])
            self._kept += min(len(s), room)
        self.dropped += max(0, len(s) - max(room, 0))
        return len(s)

    def getvalue(self):
        return "".join(self._parts)


class _Channel:
    """Reads JSON lines from fd 3 and writes them to fd 4."""

    def __init__(self):
        self._in = io.open(IN_FD, "rb", buffering=1 << 16, closefd=False)

    def send(self, msg, _dumps=_dumps, _write=_write):  # bound now: a step rebinding the globals changes nothing here
        data = (_dumps(msg, ensure_ascii=False) + "\n").encode("utf-8", "replace")
        view = memoryview(data)
        while view:
            n = _write(OUT_FD, view)
            view = view[n:]

    def recv(self):
        line = self._in.readline()
        if not line:
            raise SystemExit(0)  # the parent closed the channel: nothing more to do
        return _loads(line)


def _jsonable(value, depth=0):
    """A JSON-safe rendering of an arbitrary final answer (numpy -> lists, others -> str)."""
    try:
        text = _dumps(value)
        return value if len(text) <= MAX_FINAL_ANSWER_CHARS else str(value)[:MAX_FINAL_ANSWER_CHARS]
    except (TypeError, ValueError, OverflowError, RecursionError):
        pass
    if depth == 0 and hasattr(value, "tolist"):
        try:
            return _jsonable(value.tolist(), depth + 1)
        except Exception:  # noqa: BLE001 - a broken tolist() just falls through to str()
            pass
    try:
        return str(value)[:MAX_FINAL_ANSWER_CHARS]
    except Exception as e:  # noqa: BLE001 - an object whose __str__ raises is still an answer
        return f"<unprintable {type(value).__name__}: {type(e).__name__}>"


def _check_argument(value, path):
    """Tool arguments cross a process boundary as JSON: only plain data and paths."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_check_argument(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"tool argument {path} has a non-string key {k!r}")
            out[k] = _check_argument(v, f"{path}[{k!r}]")
        return out
    raise TypeError(
        f"tool argument {path} is a {type(value).__name__}: tools take str/int/float/bool/list/dict/None; "
        "save images to a file and pass its path"
    )


class _Integrity:
    """Notices a step that changed the worker's own code (monkeypatching Worker.run, _Channel.send,
    json.dumps, a builtin the worker calls, a function's __code__/__defaults__/__closure__ ...).

    The worker file itself is read-only (a read-only tmpfs); what a step can change is the code in
    memory. The fingerprint below is taken once everything is defined and re-checked before and
    after every step; a mismatch is reported in the 'done' message and the parent restarts the
    worker from its pristine file. This catches patches, not an attacker rewriting memory through
    ctypes -- which gains nothing: the parent validates every message, whoever wrote it.
    """

    _MODULES = (os, io, json, sys, time, math, random, resource, signal, threading, traceback, linecache)  # noqa: E501

    def __init__(self):
        self._snapshot = None
        self._used = ()

    def _fingerprint(self):
        items = {}
        g = globals()
        for name, obj in list(g.items()):
            items[name] = id(obj)
            self._add_object(items, name, obj, g)
        used = self._used
        for mod in (*self._MODULES, builtins):  # only what the worker's code looks up on them
            space = vars(mod)
            for name in used:
                if name in space and callable(space[name]):
                    items[f"{mod.__name__}.{name}"] = id(space[name])
        return items

    @staticmethod
    def _add_function(items, name, fn):
        items[f"{name}.__code__"] = id(fn.__code__)
        items[f"{name}.__defaults__"] = id(fn.__defaults__)
        items[f"{name}.__kwdefaults__"] = id(fn.__kwdefaults__)
        for i, cell in enumerate(fn.__closure__ or ()):
            try:
                items[f"{name}.__closure__[{i}]"] = id(cell.cell_contents)
            except ValueError:
                items[f"{name}.__closure__[{i}]"] = None

    def _add_object(self, items, name, obj, g):
        if isinstance(obj, type(self._add_object.__func__)) and obj.__globals__ is g:
            self._add_function(items, name, obj)
        elif isinstance(obj, type) and obj.__module__ == g["__name__"]:
            for k, v in list(vars(obj).items()):
                items[f"{name}.{k}"] = id(v)
                fn = getattr(v, "__func__", v)
                if isinstance(fn, type(self._add_object.__func__)):
                    self._add_function(items, f"{name}.{k}", fn)

    @staticmethod
    def _names_used(g):
        """Every global and attribute name the worker's own functions look up."""
        names = set()
        for obj in list(g.values()):
            fns = [obj] if callable(obj) and hasattr(obj, "__code__") else []
            if isinstance(obj, type):
                fns = [getattr(v, "__func__", v) for v in vars(obj).values()]
            for fn in fns:
                code = getattr(fn, "__code__", None)
                stack = [code] if code is not None else []
                while stack:
                    c = stack.pop()
                    names.update(c.co_names)
                    stack.extend(k for k in c.co_consts if isinstance(k, type(c)))
        return sorted(names)

    def seal(self, worker):
        self._worker_attrs = {k: id(v) for k, v in vars(worker).items() if k not in ("ns", "in_step")}
        self._worker = worker
        self._used = tuple(sorted(self._names_used(globals())))
        self._snapshot = tuple(sorted(self._fingerprint().items()))

    def check(self):
        """None, or a short description of what was changed."""
        if self._snapshot is None:
            return None
        now = self._fingerprint()
        changed = [k for k, v in self._snapshot if now.get(k, -1) != v]
        changed += [f"worker.{k}" for k, v in self._worker_attrs.items() if id(vars(self._worker).get(k)) != v]
        if not changed:
            return None
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        return shown[:1900]


_INTEGRITY = _Integrity()


class Worker:
    def __init__(self, channel):
        self.chan = channel
        self.ns = {"__name__": "__main__", "__builtins__": builtins}
        self.tools = []  # [(name, params or None)]
        self.cap = 20_000
        self.cpu_s = 60.0
        self.in_step = False
        # OS-level output (subprocesses, C libraries) goes to an unnamed file in the private /tmp.
        self.out_fd = os.open("/tmp", os.O_TMPFILE | os.O_RDWR, 0o600)

    # --- setup ----------------------------------------------------------------------------------
    def init(self, msg):
        for path in msg.get("site_paths", []):
            if path not in sys.path:
                sys.path.append(path)
        self.tools = [(t["name"], t.get("params")) for t in msg.get("tools", [])]
        self.cap = int(msg.get("max_output_chars", self.cap))
        self.cpu_s = float(msg.get("cpu_s", self.cpu_s))
        random.seed(msg.get("seed", 0))
        os.set_inheritable(IN_FD, False)
        os.set_inheritable(OUT_FD, False)
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(self.out_fd, 1)
        os.dup2(self.out_fd, 2)
        self.chan.send({"op": "ready", "python": sys.version.split()[0]})

    def _make_tool(self, name, params):
        chan, worker = self.chan, self

        def tool(*args, **kwargs):
            if _getpid() != MY_PID:
                raise ToolError(f"{name}: tools can only be called from the main sandbox process, not a forked child")
            if not worker.in_step:
                raise ToolError(f"{name}: tools can only be called while a step runs")
            if args:
                if params is None:
                    raise TypeError(f"{name}() takes keyword arguments only")
                if len(args) > len(params):
                    raise TypeError(f"{name}() takes at most {len(params)} positional arguments ({len(args)} given)")
                for pname, value in zip(params, args):
                    if pname in kwargs:
                        raise TypeError(f"{name}() got multiple values for argument '{pname}'")
                    kwargs[pname] = value
            clean = {k: _check_argument(v, k) for k, v in kwargs.items()}
            with _RPC_LOCK:
                chan.send({"op": "tool", "name": name, "kwargs": clean})
                reply = chan.recv()
            if reply.get("op") != "tool_result":
                raise SystemExit(3)  # out of sync with the parent: let it restart us
            if reply.get("ok"):
                return reply.get("result", "")
            raise ToolError(reply.get("error", f"{name} failed"))

        tool.__name__ = tool.__qualname__ = name
        tool.__doc__ = f"Call the '{name}' tool (runs outside the sandbox). Parameters: {', '.join(params or []) or 'keyword arguments'}."
        return tool

    def _inject(self):
        """Re-bind tools and final_answer every step, so a model that overwrote them gets them back."""

        def final_answer(answer=None):
            """End the task with this answer."""
            raise _FinalAnswer(answer)

        self.ns["final_answer"] = final_answer
        self.ns["ToolError"] = ToolError
        for name, params in self.tools:
            if name != "final_answer":
                self.ns[name] = self._make_tool(name, params)

    # --- one step -------------------------------------------------------------------------------
    def run(self, msg, _integrity=_INTEGRITY, _send=None):
        # _send: the pristine _Channel.send (bound below), so a patched one cannot swallow 'done'
        step, code = int(msg["step"]), str(msg["code"])
        tampered = _integrity.check()
        if tampered is not None:  # changed by a thread between steps: do not run on patched code
            _send(self.chan, _skipped_step(step, tampered))
            return
        filename = f"<step {step}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        self._inject()
        out = _CappedText(self.cap)
        os.ftruncate(self.out_fd, 0)
        os.lseek(self.out_fd, 0, os.SEEK_SET)
        self._set_cpu_budget()
        error, limit, has_final, final = None, None, False, None
        start = time.perf_counter()
        sys.stdout = sys.stderr = out
        self.in_step = True
        try:
            compiled = compile(code, filename, "exec")
            exec(compiled, self.ns)
        except _FinalAnswer as fa:
            has_final, final = True, _jsonable(fa.value)
        except BaseException as e:  # noqa: BLE001 - every error of the model's code is an observation
            error, limit = self._describe(e), self._limit_of(e)
        finally:
            self.in_step = False
            sys.stdout = sys.stderr = sys.__stdout__
        if _getpid() != MY_PID:
            os._exit(0)  # a child forked by the model's code finished the step: it must not answer
        duration_ms = (time.perf_counter() - start) * 1000
        self._kill_leftovers()
        child_output, child_dropped = self._child_output()
        _send(
            self.chan,
            {
                "op": "done",
                "step": step,
                "stdout": out.getvalue(),
                "stdout_dropped": out.dropped,
                "child_output": child_output,
                "child_output_dropped": child_dropped,
                "error": error,
                "has_final_answer": has_final,
                "final_answer": final,
                "limit": limit,
                "duration_ms": duration_ms,
                "tampered": _integrity.check(),
            }
        )

    def _set_cpu_budget(self):
        """Soft RLIMIT_CPU = CPU used so far + this step's budget (the hard limit is the worker's lifetime budget)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = math.ceil(usage.ru_utime + usage.ru_stime + self.cpu_s)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))

    @staticmethod
    def _limit_of(exc):
        if isinstance(exc, MemoryError):
            return "memory"
        if isinstance(exc, OSError) and exc.errno == 27:  # EFBIG: RLIMIT_FSIZE (Python ignores SIGXFSZ)
            return "file_size"
        return None

    @staticmethod
    def _describe(exc):
        """Type, message and a traceback of the model's frames only (the worker's frames are noise)."""
        try:
            message = str(exc)
        except Exception:  # noqa: BLE001 - an exception whose __str__ raises still has a type
            message = "<unprintable message>"
        lines = _format_exc_only(type(exc), exc)
        if isinstance(exc, SyntaxError):
            return {"type": type(exc).__name__, "message": message, "traceback": "".join(lines)}
        frames = [f for f in _extract_tb(exc.__traceback__) if f.filename != WORKER_FILE]
        frames = frames[-MAX_TRACEBACK_FRAMES:]
        text = "Traceback (most recent call last):\n" + "".join(_format_list(frames)) if frames else ""
        return {"type": type(exc).__name__, "message": message, "traceback": text + "".join(lines)}

    def _kill_leftovers(self):
        """Processes started by the step die with it: kill(-1) reaches every process of our uid in
        this PID namespace except ourselves (and the root-owned init, which it cannot signal)."""
        try:
            _kill(-1, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            try:
                pid, _ = _waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                time.sleep(0.002)

    def _child_output(self):
        """What child processes and C code wrote to fds 1/2 during the step: (text, bytes dropped)."""
        size = os.fstat(self.out_fd).st_size
        data = os.pread(self.out_fd, self.cap, 0)
        return data.decode("utf-8", "replace"), max(0, size - len(data))

    # --- main loop ------------------------------------------------------------------------------
    def serve(self):
        run, recv = Worker.run, _Channel.recv  # the pristine functions, whatever a step rebinds
        while True:
            msg = recv(self.chan)
            op = msg.get("op")
            if op == "run":
                run(self, msg)
            elif op == "init":
                self.init(msg)
                _INTEGRITY.seal(self)
            else:
                raise SystemExit(4)  # unexpected message: out of sync, let the parent restart us


Worker.run.__defaults__ = (_INTEGRITY, _Channel.send)


def _skipped_step(step, tampered):
    return {
        "op": "done", "step": step, "stdout": "", "stdout_dropped": 0, "child_output": "", "child_output_dropped": 0,
        "error": {"type": "SandboxTampered", "message": "the step was not run: the sandbox's own code had been changed", "traceback": ""},
        "has_final_answer": False, "final_answer": None, "limit": None, "duration_ms": 0.0, "tampered": tampered,
    }


def main():
    Worker(_Channel()).serve()


if __name__ == "__main__":
    main()
