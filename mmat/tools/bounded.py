"""Decoding untrusted bytes (images, documents, audio) in a bounded child process.

Workspace files are written by model code, so their bytes are hostile: a 1 MB PNG can declare
gigapixels, a 1 MB zip can expand to gigabytes, a PDF can nest compressed streams, an XML file can
be a billion laughs. The parent (root, holding the store and the models) must not pay for them.

Design: every decode runs in a fresh child process forked from a forkserver (a clean process
started once, with PIL and markitdown already imported; forking the parent itself is unsafe, it
has threads). The child gets the bytes -- never a path --, sets ``RLIMIT_AS`` to what it has
mapped plus :data:`DECODE_MEMORY_MB`, ``RLIMIT_CPU``, ``RLIMIT_FSIZE`` and no core dumps, decodes,
and sends back plain data (pixels, markdown text, samples). The parent waits at most
:data:`DECODE_TIMEOUT_S` and kills it after that. Before any decoder runs, cheap structural checks
refuse what is clearly a bomb: Pillow's ``MAX_IMAGE_PIXELS`` is set to the pixel budget and its
warning made an error, and zip containers (zip, docx, xlsx, pptx, nested ones too) are bounded by
member count, total uncompressed size and compression ratio from their central directories --
Python's zipfile, which every converter here uses, never inflates a member past its declared size.

Identity. In root mode each child runs as a fresh random uid/gid (``setgroups([])`` first, from the
sandboxes' uid range), so even a decoder exploit reads only what any user may read and cannot touch
a root-owned file; the forkserver made the runtime reachable for such a uid once, in a private mount
namespace (mmat.tools._decoder_view: closed directories above the runtime, such as a 0700 /root,
become a tmpfs holding read-only binds of just the runtime). In rootless mode (an unprivileged
parent) the child keeps the caller's uid: it cannot take another without a user namespace, and the
caller's files are the caller's own. Before it looks at a byte (``_confine``) it also drops every
capability, privileges for good (no_new_privs), the network (the sandbox's seccomp filter: sockets
other than AF_UNIX fail, and mount, ptrace, bpf, io_uring, keyctl... too), and the parent's
environment (the forkserver keeps only PATH, HOME, TMPDIR, TZ and the locale, so no API key reaches
a decoder's ``os.environ``). What holds it otherwise is the process boundary, the limits and the
fact that it is handed bytes only.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
from multiprocessing import context as mp_context
from multiprocessing import forkserver, popen_forkserver, reduction, resource_tracker, spawn, util
import resource
import threading
import warnings
import zipfile
from typing import TYPE_CHECKING, Any

from mmat.tools.decode_cache import cache_key, decode_cache
from mmat.tools.errors import ToolArgumentError, ToolError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from mmat.tools.context import WorkspaceFile

__all__ = [
    "decode_image", "document_markdown", "decode_audio", "check_archive", "run_bounded", "BoundedFailure",
    "DECODE_TIMEOUT_S", "DECODE_MEMORY_MB", "ARCHIVE_MAX_MEMBERS", "ARCHIVE_MAX_BYTES", "ARCHIVE_MAX_RATIO",
]  # fmt: skip

# Wall time of one decode. Real inputs decode in well under a second; a PDF of a few hundred pages
# converts in a few seconds on this CPU.
DECODE_TIMEOUT_S = 30.0
# Address space the decoder may add to what the child has mapped at start (the imported libraries):
# a 40-megapixel RGB image plus its copies during conversion fits in about 600 MiB.
DECODE_MEMORY_MB = 1536
# Zip containers: members, total uncompressed bytes, and the overall compression ratio (checked
# once the archive expands to more than ARCHIVE_RATIO_FLOOR bytes; office files compress 3-30x).
ARCHIVE_MAX_MEMBERS = 2_000
ARCHIVE_MAX_BYTES = 128 * 1024 * 1024
ARCHIVE_MAX_RATIO = 200
ARCHIVE_RATIO_FLOOR = 16 * 1024 * 1024
ARCHIVE_MAX_DEPTH = 3  # zips inside zips inside zips; deeper nesting is refused
MAX_MARKDOWN_CHARS = 2_000_000  # text sent back from a conversion (observations are far shorter)
_ZIP_SUFFIXES = (".zip", ".docx", ".xlsx", ".pptx", ".jar", ".epub", ".odt", ".ods", ".odp")

_ctx_lock = threading.Lock()
_ctx: Any = None
_markitdown: Any = None  # built in the forkserver (see _preload) and inherited by every child


class BoundedFailure(Exception):
    """A decode that did not finish: kind is 'timeout', 'memory', 'crash', 'refused' or 'error'."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


class _Refused(Exception):
    """Raised in the child: the input is refused for a reason the model can act on."""


# --- the child side -------------------------------------------------------------------------------
def _vm_size() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


# What of the parent's environment the forkserver (and so every decoder) keeps.
_ENV_KEPT = ("PATH", "HOME", "TMPDIR", "TZ", "LANG", "LC_ALL", "LC_CTYPE")
_seccomp_prog: bytes | None = None  # the sandbox's filter, compiled in the forkserver (see _preload)
_view_error: str | None = None  # why the forkserver could not expose the runtime (None: it did, or had no need)


def _confine(uid: int | None) -> None:
    """In the child, before any decoding: (root mode) the unprivileged ``uid`` as uid and gid with no
    groups, then no capabilities, no new privileges, no network (seccomp)."""
    import ctypes
    import struct

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

    def check(ret: int, what: str) -> None:
        if ret != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    pr_capbset_drop, pr_set_no_new_privs, pr_set_seccomp, pr_cap_ambient = 24, 38, 22, 47
    for cap in range(64):  # needs CAP_SETPCAP (root); an unprivileged parent has nothing to drop
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            break
    libc.prctl(pr_cap_ambient, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    if uid is not None and os.geteuid() == 0:  # after the bounding set (that needs CAP_SETPCAP), before capset
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # from root to non-0 without keepcaps: permitted and effective sets empty
        if 0 in (*os.getresuid(), *os.getresgid()) or os.getgroups():
            raise OSError("the decoder could not leave root")
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    check(libc.capset(ctypes.c_char_p(header), ctypes.create_string_buffer(24)), "capset")
    check(libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0), "no_new_privs")
    if _seccomp_prog is not None:
        buf = ctypes.create_string_buffer(_seccomp_prog)
        prog = ctypes.create_string_buffer(struct.pack("HxxxxxxQ", len(_seccomp_prog) // 8, ctypes.addressof(buf)))
        check(libc.prctl(pr_set_seccomp, 2, ctypes.addressof(prog), 0, 0), "seccomp")


def _child(conn: Any, job: str, args: tuple[Any, ...], memory_mb: int, cpu_s: int, uid: int | None) -> None:
    try:
        _confine(uid)
        budget = _vm_size() + memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (budget, budget))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024 * 1024,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        result: tuple[str, Any] = ("ok", _JOBS[job](*args))
    except _Refused as e:
        result = ("refused", str(e))
    except MemoryError:
        result = ("memory", "")
    except BaseException as e:  # noqa: BLE001 - every failure of a decoder is reported to the parent
        result = ("error", f"{type(e).__name__}: {str(e)[:500]}")
    try:
        conn.send(result)
    except MemoryError:
        conn.send(("memory", ""))
    finally:
        conn.close()
        os._exit(0)


def _image_job(data: bytes, max_pixels: int) -> tuple[tuple[int, int], bytes]:
    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow warns above this and raises above twice it ...
    warnings.simplefilter("error", Image.DecompressionBombWarning)  # ... the warning is an error too
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise _Refused(f"{w}x{h}")
            img.load()  # the first frame only
            rgb = ImageOps.exif_transpose(img).convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _Refused("more pixels than allowed") from None
    if rgb.width * rgb.height > max_pixels:
        raise _Refused(f"{rgb.width}x{rgb.height}")
    return rgb.size, rgb.tobytes()


def _document_job(data: bytes, suffix: str, name: str) -> tuple[str, str]:
    """('ok', markdown) | ('unsupported', detail) | ('damaged', detail)."""
    global _markitdown
    from markitdown import FileConversionException, MarkItDown, StreamInfo, UnsupportedFormatException

    problem = check_archive(data, suffix)
    if problem:
        raise _Refused(problem)
    if _markitdown is None:
        _markitdown = MarkItDown(enable_plugins=False)
    try:
        text = _markitdown.convert_stream(io.BytesIO(data), stream_info=StreamInfo(extension=suffix or None, filename=name)).text_content
    except UnsupportedFormatException:
        return "unsupported", ""
    except FileConversionException as e:
        detail = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        return "damaged", detail[:200]
    return "ok", (text or "")[:MAX_MARKDOWN_CHARS]


def _audio_job(data: bytes, suffix: str) -> tuple[Any, int]:
    """(float32 mono samples, rate) -- .wav through the standard library, others through soundfile."""
    import wave

    import numpy as np

    if suffix == ".wav":
        try:
            with wave.open(io.BytesIO(data), "rb") as w:
                rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
                raw = w.readframes(w.getnframes())
        except (wave.Error, EOFError) as e:
            raise _Refused(str(e) or "not a wav file") from None
        dtypes = {1: np.uint8, 2: np.int16, 4: np.int32}
        if width not in dtypes:
            raise _Refused(f"it uses {8 * width}-bit samples; only 8/16/32-bit PCM wav is read")
        if channels < 1:
            raise _Refused("it has no audio channels")
        samples = np.frombuffer(raw[: len(raw) - len(raw) % (width * channels)], dtypes[width]).astype(np.float32)
        samples = (samples - 128.0) / 128.0 if width == 1 else samples / float(np.iinfo(dtypes[width]).max)
        return samples.reshape(-1, channels).mean(axis=1), rate
    import soundfile

    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as e:
        raise _Refused(str(e)) from None
    return samples.mean(axis=1), rate


def _probe_job(*paths: str) -> dict[str, Any]:
    """What a decoder child is left with (for tests and diagnostics): capability sets, no_new_privs,
    seccomp mode, uids, gids and groups, environment names, whether an AF_INET socket can be created
    (no traffic), and for each of ``paths`` whether it opens for reading ("ok" or the errno name).
    The only job that takes paths: real decoders get bytes."""
    import socket

    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.startswith("Cap") or key in ("NoNewPrivs", "Seccomp", "Uid", "Gid", "Groups"):
                status[key] = value.strip()
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
        inet = "created"
    except OSError as e:
        inet = errno_name(e.errno)
    reads = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                f.read(1)
            reads[path] = "ok"
        except OSError as e:
            reads[path] = errno_name(e.errno)
    return {"status": status, "env": sorted(os.environ), "inet_socket": inet, "reads": reads, "view_error": _view_error}


def errno_name(number: int | None) -> str:
    import errno

    return errno.errorcode.get(number or 0, str(number))


_JOBS = {"image": _image_job, "document": _document_job, "audio": _audio_job, "probe": _probe_job}


def _preload() -> None:
    """Run in the forkserver once: import the decoders so each child starts warm, compile the
    seccomp filter the children install, (root) make the runtime reachable for the children's
    unprivileged uids, and keep only the harmless part of the environment."""
    global _markitdown, _seccomp_prog, _view_error
    from markitdown import MarkItDown
    from PIL import Image

    from mmat.sandbox.seccomp import seccomp_program
    from mmat.tools._decoder_view import expose_runtime

    Image.init()
    _markitdown = MarkItDown(enable_plugins=False)
    _single_threaded_sniffer(_markitdown)
    _seccomp_prog = seccomp_program()
    if os.geteuid() == 0:
        _view_error = expose_runtime()
    for key in [k for k in os.environ if k not in _ENV_KEPT]:
        del os.environ[key]


def _single_threaded_sniffer(markitdown: Any) -> None:
    """Give markitdown's magika (the content sniffer every conversion runs) a one-thread ONNX session.

    Why: onnxruntime's default session keeps a thread pool that spins between runs; each decoder child
    started that pool again and spent about twice the CPU of the inference itself (measured 19 ms vs
    10 ms per conversion of a small CSV), and a pool's threads do not survive a fork anyway. MarkItDown
    and Magika take no session options, so the session is replaced where it is known to live; if a
    later magika keeps it elsewhere, the default session stays (slower, still correct)."""
    sniffer = getattr(markitdown, "_magika", None)
    if sniffer is None or not hasattr(sniffer, "_onnx_session") or not hasattr(sniffer, "_model_path"):
        return
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sniffer._onnx_session = onnxruntime.InferenceSession(str(sniffer._model_path), sess_options=options,
                                                         providers=["CPUExecutionProvider"])


# --- archive bounds -------------------------------------------------------------------------------
def check_archive(data: bytes, suffix: str = "", *, depth: int = 0, budget: list[int] | None = None) -> str | None:
    """Why a zip container is refused (None when it is within bounds or not a zip at all).

    Reads the central directory only (sizes there are what Python's zipfile will inflate a member
    to at most); nested containers are opened and checked against the same total budget."""
    if not data.startswith(b"PK") and suffix not in _ZIP_SUFFIXES:
        return None
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None  # not a zip after all: the converters decide
    budget = budget if budget is not None else [ARCHIVE_MAX_BYTES]
    with zf:
        members = zf.infolist()
        if len(members) > ARCHIVE_MAX_MEMBERS:
            return f"the archive has {len(members):,} members, more than the {ARCHIVE_MAX_MEMBERS:,} allowed"
        total = sum(m.file_size for m in members)
        if total > budget[0]:
            return f"the archive expands to {total:,} bytes, more than the {ARCHIVE_MAX_BYTES:,} allowed"
        if total > ARCHIVE_RATIO_FLOOR and total > ARCHIVE_MAX_RATIO * max(1, len(data)):
            return f"the archive expands {total // max(1, len(data)):,} times its size (more than {ARCHIVE_MAX_RATIO}x): a zip bomb"
        budget[0] -= total
        for m in members:
            inner_suffix = os.path.splitext(m.filename)[1].lower()
            if m.is_dir() or (inner_suffix not in _ZIP_SUFFIXES):
                continue
            if depth + 1 >= ARCHIVE_MAX_DEPTH:
                return f"the archive nests archives more than {ARCHIVE_MAX_DEPTH} deep"
            try:
                inner = zf.read(m)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError):
                continue  # damaged or encrypted member: markitdown reports it
            problem = check_archive(inner, inner_suffix, depth=depth + 1, budget=budget)
            if problem:
                return f"{problem} (in member '{m.filename[:80]}')"
    return None


# --- the parent side ------------------------------------------------------------------------------
class _Popen(popen_forkserver.Popen):
    """The forkserver's Popen without the "re-import __main__ in the child" step: multiprocessing
    re-runs the parent's main script (the mmat CLI, a user's script) in every child, which costs
    seconds and breaks for stdin scripts; the decoders need nothing from it. Same steps as
    popen_forkserver.Popen._launch (CPython 3.8-3.13) otherwise."""

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_path", None)
        prep_data.pop("init_main_from_name", None)
        buf = io.BytesIO()
        mp_context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            mp_context.set_spawning_popen(None)
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)
        _parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _DecoderProcess(mp_context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> _Popen:
        return _Popen(process_obj)


def start_decoders() -> None:
    """Start the decoders' forkserver now (it preloads the decoders in its own process, in the background).
    A process about to fork workers (``mmat.pipeline.process_executor``) calls it so that they all decode
    through this one instead of starting one each (1-2 CPU-s of imports apiece)."""
    _context()
    forkserver.ensure_running()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _share_parents_forkserver() -> None:
    """In a forked child (a synth worker process): decode through the parent's forkserver, which lives as long
    as the parent. multiprocessing's own liveness check (waitpid) works only in the process that started it,
    so the child asks /proc instead, and starts a forkserver of its own once the parent's is gone."""
    global _ctx_lock
    _ctx_lock = threading.Lock()  # a lock another thread held at the fork stays held in the child
    server = forkserver._forkserver
    server._lock = threading.Lock()
    pid = server._forkserver_pid
    if pid is None:
        return
    switch = threading.Lock()

    def ensure_running() -> None:
        with switch:
            if server._forkserver_pid == pid and _alive(pid):
                resource_tracker.ensure_running()
                return
            if server._forkserver_pid == pid:  # the parent's is gone: forget it, start this process's own
                with contextlib.suppress(OSError):
                    os.close(server._forkserver_alive_fd)
                server._forkserver_address = server._forkserver_alive_fd = server._forkserver_pid = None
        type(server).ensure_running(server)

    server.ensure_running = ensure_running


os.register_at_fork(after_in_child=_share_parents_forkserver)


def _context() -> Any:
    global _ctx
    with _ctx_lock:
        if _ctx is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["mmat.tools._bounded_preload"])
            _ctx = ctx
        return _ctx


def run_bounded(job: str, *args: Any, timeout_s: float | None = None, memory_mb: int | None = None) -> Any:
    """Run ``_JOBS[job](*args)`` in a fresh bounded child; its result, or BoundedFailure.
    Limits default to DECODE_TIMEOUT_S and DECODE_MEMORY_MB (read at call time). The same request
    decoded before (same bytes, arguments and limits) is answered from :mod:`mmat.tools.decode_cache`."""
    timeout_s = DECODE_TIMEOUT_S if timeout_s is None else timeout_s
    memory_mb = DECODE_MEMORY_MB if memory_mb is None else memory_mb
    # a probe reports the child itself (its uid is fresh each time) and reads paths: never kept
    key = None if job == "probe" else cache_key(job, args, (timeout_s, memory_mb))
    kept, value = decode_cache.get(key)
    if kept:
        return value
    value = _run_in_child(job, args, timeout_s, memory_mb)
    decode_cache.put(key, value)
    return value


def _run_in_child(job: str, args: tuple[Any, ...], timeout_s: float, memory_mb: int) -> Any:
    from mmat.sandbox.process import allocate_uid

    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    # root mode: a fresh unprivileged uid per child (the range the sandboxes draw theirs from)
    uid = allocate_uid() if os.geteuid() == 0 else None
    proc = _DecoderProcess(target=_child, args=(send, job, args, memory_mb, int(timeout_s) + 1, uid), daemon=True)
    try:
        proc.start()
        send.close()
        if not recv.poll(timeout_s):
            raise BoundedFailure("timeout", f"decoding took longer than {timeout_s:g} s")
        try:
            status, value = recv.recv()
        except (EOFError, OSError):
            proc.join(1.0)
            raise BoundedFailure("crash", f"the decoder died (exit {proc.exitcode})") from None
    finally:
        recv.close()
        if proc.is_alive():
            proc.kill()
        proc.join(2.0)
        if proc.exitcode is not None:
            proc.close()
    if status == "ok":
        return value
    if status == "memory":
        raise BoundedFailure("memory", f"decoding needed more than {memory_mb:,} MiB of memory")
    raise BoundedFailure(status, value)


def _why(e: BoundedFailure) -> str:
    if e.kind == "timeout":
        return f"decoding it took longer than {DECODE_TIMEOUT_S:g} s, so it was stopped"
    if e.kind == "memory":
        return f"decoding it needed more than {DECODE_MEMORY_MB:,} MiB of memory, so it was stopped"
    return e.message


def decode_image(tool: str, f: WorkspaceFile, *, max_pixels: int) -> Image.Image:
    """RGB image (EXIF rotation applied) from a workspace file's bytes, decoded in a bounded child."""
    from PIL import Image

    shown = _shown(f.name)
    try:
        size, pixels = run_bounded("image", f.data, max_pixels)
    except BoundedFailure as e:
        if e.kind == "refused":
            dims = f" is {e.message} pixels," if "x" in e.message and e.message.replace("x", "").isdigit() else " has"
            raise ToolArgumentError(
                f"{tool}: image '{shown}'{dims} more than the {max_pixels:,} pixels this tool accepts; "
                "make it smaller in your code first (e.g. PIL's Image.reduce or thumbnail)"
            ) from None
        if e.kind == "error" and e.message.startswith("UnidentifiedImageError"):
            raise ToolArgumentError(
                f"{tool}: cannot open image '{shown}': it is not an image file that can be decoded "
                "(corrupt, empty or not an image); check the file name or use inspect_file_as_text for documents"
            ) from None
        if e.kind == "error":
            raise ToolArgumentError(f"{tool}: cannot open image '{shown}': the file is damaged or truncated ({e.message})") from None
        raise ToolArgumentError(f"{tool}: cannot open image '{shown}': {_why(e)}") from None
    return Image.frombytes("RGB", size, pixels)


def document_markdown(f: WorkspaceFile) -> str:
    """Markdown text of a document's bytes (markitdown in a bounded child); ToolArgumentErrors name the file."""
    shown = _shown(f.name)
    try:
        status, text = run_bounded("document", f.data, f.suffix, os.path.basename(f.name))
    except BoundedFailure as e:
        if e.kind == "refused":
            raise ToolArgumentError(f"inspect_file_as_text: '{shown}' is refused: {e.message}") from None
        if e.kind == "error":
            raise ToolError(f"inspect_file_as_text: could not read '{shown}' ({e.message})") from None
        raise ToolArgumentError(f"inspect_file_as_text: could not read '{shown}': {_why(e)}") from None
    if status == "unsupported":
        raise ToolArgumentError(
            f"inspect_file_as_text: '{shown}' is in a format that cannot be read as text; "
            "supported: pdf, docx, xlsx, pptx, html, csv, json, xml, zip and plain-text files"
        )
    if status == "damaged":
        raise ToolArgumentError(
            f"inspect_file_as_text: could not read '{shown}': the file looks damaged or is not what its "
            f"extension says ({text})"
        )
    return str(text)


def decode_audio(f: WorkspaceFile) -> tuple[Any, int]:
    """(mono float32 samples, sample rate) of an audio file's bytes, decoded in a bounded child."""
    shown = _shown(f.name)
    try:
        return run_bounded("audio", f.data, f.suffix)  # type: ignore[no-any-return]
    except BoundedFailure as e:
        detail = e.message if e.kind in ("refused", "error") else _why(e)
        raise ToolArgumentError(f"inspect_file_as_text: cannot read audio '{shown}': {detail}") from None


def _shown(name: str) -> str:
    from mmat.sandbox.escape import escape_text

    text = escape_text(name)
    return text if len(text) <= 120 else text[:117] + "..."
