"""Hostile code against the PARENT: the tool host, workspace walks, forks, step images, the channel.

Model code runs inside the sandbox, but the parent (root here) reads, writes, walks, copies and
chowns the workspace, and decodes what the model leaves there. Each case below attacks one of
those, with threads that swap files, directories and FIFOs for symlinks while the parent works
(the races repeat, RACE_TRIES times, because a race lost once is still a hole), or with inputs
built to cost the parent memory or time. Every case plants canaries OUTSIDE the workspace -- a
secret to read, a file and a directory that must not change, be deleted or chowned, a name that
must not appear -- asserts them untouched, and then that the sandbox still prints 42.
"""

from __future__ import annotations

import io
import json
import os
import resource
import struct
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from mmat.config import load_settings
from mmat.sandbox import Limits, Sandbox
from mmat.sandbox import workspace as wsp

from .helpers import needs_root

pytestmark = needs_root
tools = pytest.importorskip("mmat.tools")

RACE_TRIES = 25
SECRET = "CANARY-7f3a9c-do-not-leak"
WALL = Limits(wall_s=20, start_timeout_s=30)


# --- canaries ------------------------------------------------------------------------------------
class Canaries:
    """Host files outside the workspace that no attack may read, change, delete or chown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.secret = root / "secret.txt"
        self.secret.write_text(f"{SECRET}\n")
        self.secret_png = root / "secret.png"
        _png_bytes(64, 48, (250, 10, 10), self.secret_png)
        self.victim = root / "victim.txt"
        self.victim.write_text("victim: must stay exactly like this")
        self.vdir = root / "victim_dir"
        self.vdir.mkdir()
        for name in ("doc.txt", "big", "x.bin", "secret_in_dir.txt"):
            (self.vdir / name).write_text(f"{SECRET} in {name}")
        (self.vdir / "keep_link").symlink_to(self.victim)  # a symlink a walk that entered here would delete
        self.absent = root / "must_not_exist.png"
        self._before = self._state()

    def _state(self) -> dict[str, tuple]:
        out = {}
        for p in [self.secret, self.secret_png, self.victim, self.vdir, *sorted(self.vdir.iterdir())]:
            st = os.lstat(p)
            data = os.readlink(p) if p.is_symlink() else (p.read_bytes() if p.is_file() else sorted(os.listdir(p)))
            out[str(p)] = (st.st_ino, st.st_uid, st.st_gid, st.st_mode, st.st_mtime_ns, data)
        return out

    def assert_untouched(self, *texts: str, workspace: Path | None = None) -> None:
        assert self._state() == self._before, "a canary outside the workspace was changed, chowned or deleted"
        assert not os.path.lexists(self.absent), "a file appeared outside the workspace"
        for text in texts:
            assert SECRET not in text, "the secret outside the workspace was read"
        if workspace is not None:
            for rel in wsp.scan(workspace).files:
                assert SECRET.encode() not in wsp.read_file(workspace, rel, 1 << 30), f"the secret was copied into {rel}"


@pytest.fixture
def canaries(tmp_path) -> Canaries:
    return Canaries(tmp_path / "outside")


@pytest.fixture
def settings(mmat_home):
    s = load_settings()
    s.ensure_dirs()
    return s


def host(settings, workspace: Path, *names: str, **kw):
    return tools.WorkspaceToolHost(settings, workspace, names=list(names), **kw)


def all_text(r) -> str:
    parts = [r.stdout, r.error.message if r.error else "", r.error.traceback if r.error else "", str(r.final_answer)]
    parts += [c.result + (c.error or "") + json.dumps(c.arguments) for c in r.tool_calls]
    return "\n".join(parts)


def stop_and_42(sb: Sandbox) -> None:
    """Stop the step's racer threads (if any are still running), then the sandbox must print 42."""
    r = sb.run("try:\n    _stop.set()\n    [t.join() for t in _threads]\nexcept NameError:\n    pass\nprint(6 * 7)")
    assert r.error is None, r.error
    assert r.stdout.splitlines()[0] == "42"
    r = sb.run("print(6 * 7)")
    assert r.error is None and r.stdout == "42\n"


def _png_bytes(w: int, h: int, color=(0, 0, 0), path: Path | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, format="PNG")
    if path is not None:
        path.write_bytes(buf.getvalue())
    return buf.getvalue()


def _pixel_bomb(w: int, h: int) -> bytes:
    """A valid PNG header declaring w x h pixels, with a tiny (truncated) image stream."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\x00" * (w * 3 + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _zip_bomb(total_mb: int, members: int = 8, inner: bytes | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(members):
            z.writestr(f"part{i}.txt", b"0" * (total_mb * 1024 * 1024 // members))
        if inner is not None:
            z.writestr("inner.zip", inner)
    return buf.getvalue()


# Racer threads inside the sandbox: `swap(name, states)` flips `name` between the given states as
# fast as it can until _stop is set. A state is ('file', bytes), ('link', target), ('fifo',) or
# ('dir', {child: bytes}). Renames are atomic, so the parent sees one state or another, never none.
RACER = r'''
import os, threading, itertools
_stop = threading.Event()
_threads = []
_count = [0]

def _make(tmp, state):
    kind = state[0]
    if kind == 'file':
        with open(tmp, 'wb') as f:
            f.write(state[1])
    elif kind == 'link':
        os.symlink(state[1], tmp)
    elif kind == 'fifo':
        os.mkfifo(tmp)
    elif kind == 'dir':
        os.mkdir(tmp)
        for child, data in state[1].items():
            with open(os.path.join(tmp, child), 'wb') as f:
                f.write(data)

def _gone(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            for c in os.listdir(path):
                os.unlink(os.path.join(path, c))
            os.rmdir(path)
        else:
            os.unlink(path)
    except OSError:
        pass

def _swap(name, states):
    for i in itertools.count():
        if _stop.is_set():
            return
        tmp = f'.{os.path.basename(name)}.{i}'
        tmp = os.path.join(os.path.dirname(name), tmp)
        try:
            _make(tmp, states[i % len(states)])
            if os.path.isdir(tmp) and not os.path.islink(tmp) and os.path.lexists(name):
                old = name + f'.old{i}'
                os.rename(name, old)
                os.rename(tmp, name)
                _gone(old)
            else:
                if os.path.isdir(name) and not os.path.islink(name):
                    old = name + f'.old{i}'
                    os.rename(name, old)
                    os.rename(tmp, name)
                    _gone(old)
                else:
                    os.rename(tmp, name)
        except OSError:
            _gone(tmp)
        _count[0] += 1

def swap(name, states):
    t = threading.Thread(target=_swap, args=(name, states), daemon=True)
    t.start()
    _threads.append(t)
'''


def racer(*swaps: tuple[str, list]) -> str:
    return RACER + "".join(f"swap({name!r}, {states!r})\n" for name, states in swaps)


class TestParentHostile:
    # --- races while a tool reads ---------------------------------------------------------------
    def test_file_swapped_for_a_symlink_while_a_tool_reads_it(self, workspace, settings, canaries):
        (workspace / "doc.txt").write_text("INSIDE")
        code = racer(("doc.txt", [("file", b"INSIDE"), ("link", str(canaries.secret))]))
        code += f"out = []\nfor _ in range({RACE_TRIES}):\n    try:\n        out.append(inspect_file_as_text('doc.txt'))\n    except ToolError as e:\n        out.append('refused: ' + str(e))\nprint(_count[0] > 0, sorted(set(o.split(':')[0] for o in out)))"
        with Sandbox(workspace, tools=host(settings, workspace, "inspect_file_as_text"), limits=WALL) as sb:
            r = sb.run(code)
            assert r.error is None, r.error
            assert len(r.tool_calls) == RACE_TRIES
            for c in r.tool_calls:
                assert "INSIDE" in c.result or "symbolic link" in (c.error or "") or "not found" in (c.error or ""), c
            canaries.assert_untouched(all_text(r), workspace=workspace)
            stop_and_42(sb)

    def test_directory_swapped_for_a_symlink_to_a_host_directory(self, workspace, settings, canaries):
        (workspace / "d").mkdir()
        (workspace / "d" / "doc.txt").write_text("INSIDE")
        code = racer(("d", [("dir", {"doc.txt": b"INSIDE"}), ("link", str(canaries.vdir))]))
        code += f"for _ in range({RACE_TRIES}):\n    try:\n        inspect_file_as_text('d/doc.txt')\n    except ToolError:\n        pass\n"
        with Sandbox(workspace, tools=host(settings, workspace, "inspect_file_as_text"), limits=WALL) as sb:
            r = sb.run(code)
            assert r.error is None and len(r.tool_calls) == RACE_TRIES
            assert any("INSIDE" in c.result for c in r.tool_calls) or all(c.error for c in r.tool_calls)
            canaries.assert_untouched(all_text(r), workspace=workspace)
            stop_and_42(sb)

    def test_image_swapped_for_a_symlink_to_a_host_image(self, workspace, settings, canaries):
        _png_bytes(64, 48, (10, 10, 250), workspace / "img.png")
        inside = (workspace / "img.png").read_bytes()
        code = racer(("img.png", [("file", inside), ("link", str(canaries.secret_png))]))
        code += f"for _ in range({RACE_TRIES}):\n    try:\n        print(visualizer('Describe the image.', 'img.png').splitlines()[2])\n    except ToolError as e:\n        print('refused')\n"
        with Sandbox(workspace, tools=host(settings, workspace, "visualizer"), limits=WALL) as sb:
            r = sb.run(code)
            assert r.error is None and len(r.tool_calls) == RACE_TRIES
            # the host image is red, the workspace one blue: a leak would show up as a red dominant color
            assert "red" not in r.stdout, r.stdout
            canaries.assert_untouched(all_text(r), workspace=workspace)
            stop_and_42(sb)

    def test_file_swapped_for_a_fifo_never_blocks_the_tool_host(self, workspace, settings, canaries):
        (workspace / "doc.txt").write_text("INSIDE")
        code = racer(("doc.txt", [("file", b"INSIDE"), ("fifo",)]))
        code += f"for _ in range({RACE_TRIES}):\n    try:\n        inspect_file_as_text('doc.txt')\n    except ToolError:\n        pass\n"
        with Sandbox(workspace, tools=host(settings, workspace, "inspect_file_as_text"), limits=WALL) as sb:
            t0 = time.monotonic()
            r = sb.run(code)
            assert time.monotonic() - t0 < 60
            assert r.error is None and len(r.tool_calls) == RACE_TRIES
            assert all("INSIDE" in c.result or "FIFO" in (c.error or "") or "not found" in (c.error or "") for c in r.tool_calls)
            canaries.assert_untouched(all_text(r))
            stop_and_42(sb)

    # --- races while a tool writes --------------------------------------------------------------
    def test_planted_and_renamed_links_over_outputs_are_never_written_through(self, workspace, settings, canaries):
        _png_bytes(80, 60, (200, 200, 200), workspace / "img.png")
        plant = "import os\n" + "".join(
            f"os.symlink({str(canaries.absent)!r}, 'mask_{n}.png')\n" for n in (1, 2, 4)
        )  # dangling links at names the tool will try: creating through one would make the host file
        rename_over = racer(*[(f"mask_{n}.png", [("link", str(canaries.victim))]) for n in range(5, 5 + RACE_TRIES + 4)])
        code = plant + rename_over + (
            f"for _ in range({RACE_TRIES}):\n    try:\n        segmentation('img.png', [10, 10, 60, 50])\n    except ToolError:\n        pass\n"
        )
        with Sandbox(workspace, tools=host(settings, workspace, "segmentation"), limits=WALL) as sb:
            r = sb.run(code)
            assert r.error is None and len(r.tool_calls) == RACE_TRIES, r.error
            assert all(c.error is None for c in r.tool_calls), [c.error for c in r.tool_calls if c.error][:3]
            canaries.assert_untouched(all_text(r))
            stop_and_42(sb)

    def test_image_edit_output_cannot_be_redirected(self, workspace, settings, canaries):
        from mmat.lm import build_lm
        from mmat.testing import DummyLM

        plan = {"ops": [{"op": "grayscale"}]}
        dummy = DummyLM([{"plan": json.dumps(plan)}], name="parent-hostile-edit", cycle=True)
        lm = build_lm(dummy.model, settings=settings, cache=False)
        _png_bytes(40, 30, (90, 30, 200), workspace / "img.png")
        code = racer(*[(f"edited_{n}.png", [("link", str(canaries.victim)), ("link", str(canaries.absent))]) for n in range(1, 8)])
        code += "for _ in range(5):\n    try:\n        print(image_edit('make it gray', 'img.png'))\n    except ToolError as e:\n        print('error', e)\n"
        with Sandbox(workspace, tools=host(settings, workspace, "image_edit", lm=lm), limits=WALL) as sb:
            r = sb.run(code)
            assert r.error is None and len(r.tool_calls) == 5
            canaries.assert_untouched(all_text(r))
            stop_and_42(sb)

    # --- races after a step ---------------------------------------------------------------------
    def test_step_images_swapped_after_the_step_are_never_host_files(self, workspace, settings, canaries):
        from mmat.programs.agent import export_step_images

        blue = _png_bytes(64, 48, (10, 10, 250))
        secret = canaries.secret_png.read_bytes()
        with Sandbox(workspace, limits=WALL) as sb:
            exported = 0
            for i in range(RACE_TRIES):
                code = f"open('out{i}.png', 'wb').write({blue!r})\n" + racer((f"out{i}.png", [("link", str(canaries.secret_png)), ("file", blue)]))
                r = sb.run(code)
                assert r.error is None
                for k in range(5):  # the racer keeps swapping while the parent copies the step's images
                    for path in export_step_images(workspace, i * 5 + k, [f"out{i}.png"]):
                        exported += 1
                        assert Path(path).read_bytes() != secret and not Path(path).is_symlink()
                sb.run("_stop.set()\n[t.join() for t in _threads]")
            assert exported > 0
            canaries.assert_untouched(workspace=workspace)
            stop_and_42(sb)

    def test_hygiene_walk_never_enters_a_swapped_in_host_directory(self, workspace, settings, canaries):
        (workspace / "sub").mkdir()
        code = racer(("sub", [("dir", {"a.txt": b"x"}), ("link", str(canaries.vdir))]), ("loose", [("link", "/etc/passwd"), ("fifo",)]))
        with Sandbox(workspace, tools=host(settings, workspace, "inspect_file_as_text"), limits=WALL) as sb:
            sb.run(code)
            for _ in range(RACE_TRIES):  # each step and each tool call walks the workspace while the racer runs
                r = sb.run("try:\n    inspect_file_as_text('sub/a.txt')\nexcept ToolError:\n    pass")
                assert r.error is None
            canaries.assert_untouched(all_text(r), workspace=workspace)
            stop_and_42(sb)

    def test_quota_cleanup_never_deletes_through_a_swapped_directory(self, workspace, settings, canaries):
        limits = Limits(wall_s=20, file_size_mb=4, workspace_mb=2)
        hits = 0
        with Sandbox(workspace, limits=limits) as sb:
            for _ in range(RACE_TRIES):
                # new files in a directory that a racer keeps swapping for a link to a host directory
                # holding files of the same names: the cleanup after the overflow deletes the new
                # files -- through the workspace's fds, never through the link
                code = "import os\nos.makedirs('sub', exist_ok=True)\nfor n in ('big', 'x.bin'):\n    open('sub/' + n, 'wb').write(b'0' * 300_000)\n"
                code += racer(("sub", [("link", str(canaries.vdir)), ("dir", {"big": b"1" * 300_000, "x.bin": b"2"})]))
                code += "import time\ntime.sleep(0.02)\ntry:\n    open('fill.bin', 'wb').write(b'0' * 3_000_000)\nexcept OSError:\n    pass"
                r = sb.run(code)
                hits += r.limit_hit == "workspace"
                canaries.assert_untouched()
                if not r.restarted:
                    sb.run("_stop.set()\n[t.join() for t in _threads]\nimport shutil, os\nfor n in os.listdir('.'):\n    shutil.rmtree(n) if os.path.isdir(n) and not os.path.islink(n) else os.unlink(n)")
            assert hits >= RACE_TRIES // 2
            canaries.assert_untouched(workspace=workspace)
            stop_and_42(sb)

    def test_fork_copy_and_chown_never_follow_swapped_links(self, workspace, settings, canaries, tmp_path):
        (workspace / "sub").mkdir()
        with Sandbox(workspace, limits=WALL) as sb:
            r = sb.run(racer(("sub", [("dir", {"a.txt": b"x"}), ("link", str(canaries.vdir))]), ("f.txt", [("file", b"y"), ("link", str(canaries.secret))])))
            assert r.error is None
            for i in range(RACE_TRIES):
                # the fork copies the live workspace, replays the racer step in the child (whose racer
                # then races the mirror and the chown to the child's uid)
                with sb.fork(tmp_path / f"fork{i}") as child:
                    assert child.uid != sb.uid
                canaries.assert_untouched()
            for i in range(RACE_TRIES):
                for rel in wsp.scan(tmp_path / f"fork{i}").files:
                    assert SECRET.encode() not in wsp.read_file(tmp_path / f"fork{i}", rel, 1 << 20)
            canaries.assert_untouched(workspace=workspace)
            stop_and_42(sb)

    # --- tool arguments the model controls ------------------------------------------------------
    @pytest.mark.parametrize("arg", ["a\x00b.txt", "x" * 300 + ".txt", "d/" * 2100 + "x.txt", "\udcff.txt", "../outside/secret.txt", "/workspace/../outside/secret.txt"])
    def test_hostile_paths_are_tool_errors(self, workspace, settings, canaries, arg):
        with Sandbox(workspace, tools=host(settings, workspace, "inspect_file_as_text", "ocr"), limits=WALL) as sb:
            r = sb.run(f"for t in (inspect_file_as_text, ocr):\n    try:\n        t({arg!r})\n    except ToolError as e:\n        print('refused')")
            assert r.error is None and r.stdout == "refused\nrefused\n", (r.stdout, r.error)
            assert all(c.error and c.error.startswith("ToolError: ") for c in r.tool_calls)
            canaries.assert_untouched(all_text(r))
            stop_and_42(sb)

    def test_invalid_utf8_and_ansi_written_straight_onto_the_channel(self, workspace, settings, canaries):
        # bypasses the worker's tool() helper: raw JSON with a lone surrogate and escape codes
        raw = '{"op": "tool", "name": "inspect_file_as_text", "kwargs": {"file_path": "\\udcff\\u001b[2J.txt"}}\n'
        code = f"import os\nos.write(4, {raw.encode()!r})\nreply = b''\nwhile not reply.endswith(b'\\n'):\n    reply += os.read(3, 65536)\nprint(reply[:40])"
        with Sandbox(workspace, tools=host(settings, workspace, "inspect_file_as_text"), limits=WALL) as sb:
            r = sb.run(code)
            assert r.error is None and r.stdout.startswith("b'{\"op\": \"tool_result\", \"ok\": false")
            [call] = r.tool_calls
            assert "\x1b" not in call.error and "\\x1b[2J" in call.error and "\udcff" not in json.dumps(call.arguments, ensure_ascii=False)
            canaries.assert_untouched(all_text(r))
            stop_and_42(sb)

    def test_deeply_nested_and_huge_tool_arguments(self, workspace, settings, canaries):
        code = (
            "deep = 'x'\nfor _ in range(200):\n    deep = [deep]\nout = []\n"
            "for args in ((deep,), ('y' * 2_000_000,), ({'k': deep},)):\n"
            "    try:\n        inspect_file_as_text(*args)\n    except (ToolError, RecursionError) as e:\n        out.append(type(e).__name__)\n"
            "print(out)"
        )
        with Sandbox(workspace, tools=host(settings, workspace, "inspect_file_as_text"), limits=WALL) as sb:
            r = sb.run(code)
            assert r.error is None and r.stdout == "['ToolError', 'ToolError', 'ToolError']\n"
            assert all("not recorded" in json.dumps(c.arguments) for c in r.tool_calls)
            # nesting written straight onto the channel: the parent's JSON parser must not blow up
            r = sb.run("import os\nos.write(4, b'[' * 200_000 + b']' * 200_000 + b'\\n')")
            assert r.error.type == "SandboxProtocolError" and r.restarted
            canaries.assert_untouched(all_text(r))
            stop_and_42(sb)

    def test_wrongly_typed_arguments_never_raise_out_of_run(self, workspace, settings, canaries):
        _png_bytes(40, 30, path=workspace / "img.png")
        calls = [
            "ocr(['img.png'])", "ocr({'a': 1})", "ocr(10 ** 400)", "ocr(None)", "ocr(float('nan'))",
            "segmentation('img.png', 'not a box')", "segmentation('img.png', [1e308, -1e308, 1e308, 5])",
            "segmentation('img.png', [0, 0, 0, 0])", "facedetection(image_path='img.png', extra=1)",
            "inspect_file_as_text('img.png', question=['x'])", "visualizer('', 'img.png')",
        ]
        code = "out = []\n" + "".join(f"try:\n    {c}\n    out.append('ok')\nexcept (ToolError, TypeError, ValueError) as e:\n    out.append(type(e).__name__)\n" for c in calls) + "print(out)"
        names = ("ocr", "segmentation", "facedetection", "inspect_file_as_text", "visualizer")
        with Sandbox(workspace, tools=host(settings, workspace, *names), limits=WALL) as sb:
            r = sb.run(code)
            assert r.error is None, r.error
            assert "ok" not in eval(r.stdout)  # noqa: S307 - printed by the test's own code
            canaries.assert_untouched(all_text(r))
            stop_and_42(sb)

    def test_lone_surrogates_and_forged_results_do_not_break_the_parent(self, workspace, settings, canaries):
        with Sandbox(workspace, limits=WALL) as sb:
            sb.run("kept = 1")
            r = sb.run("print('a\ud800b')\nfinal_answer('\udfff')")  # the controller's code may hold them too
            assert r.error is None and r.stdout == "a?b\n"
            forged = {"op": "done", "step": 2, "stdout": "forged \\ud800", "stdout_dropped": 0, "child_output": "",
                      "child_output_dropped": 0, "error": None, "has_final_answer": True, "final_answer": "\\udfff",
                      "limit": None, "duration_ms": 1}
            r = sb.run(f"import os, time\nos.write(4, {(json.dumps(forged) + chr(10)).encode()!r})\ntime.sleep(0.3)")
            # a step may forge its own result (it controls it anyway), escaped; its real 'done' comes late
            assert r.stdout == "forged \\ud800" and r.final_answer == "\\udfff"
            r = sb.run("print(kept)")  # the stale 'done' is skipped, not a broken channel
            assert r.error is None and r.stdout == "1\n"
            canaries.assert_untouched(all_text(r))
            stop_and_42(sb)

    def test_odd_images_are_results_or_tool_errors(self, workspace, settings, canaries):
        from PIL import Image

        Image.new("RGB", (1, 1)).save(workspace / "one.png")
        Image.new("RGB", (1, 3000)).save(workspace / "tall.png")
        Image.new("RGB", (3000, 1)).save(workspace / "wide.png")
        Image.new("I;16", (50, 50)).save(workspace / "i16.png")
        Image.new("CMYK", (50, 50)).save(workspace / "cmyk.jpg")
        frames = [Image.new("RGB", (20, 20), (i, 0, 0)) for i in range(30)]
        frames[0].save(workspace / "anim.gif", save_all=True, append_images=frames[1:])
        calls = [f"{t}('{n}')" for t in ("ocr", "facedetection") for n in ("one.png", "tall.png", "wide.png", "i16.png", "cmyk.jpg", "anim.gif")]
        calls += [f"segmentation('{n}', [0, 0, 1, 1])" for n in ("one.png", "tall.png", "anim.gif")]
        code = "".join(f"try:\n    {c}\nexcept ToolError:\n    pass\n" for c in calls) + "print('done')"
        with Sandbox(workspace, tools=host(settings, workspace, "ocr", "facedetection", "segmentation"), limits=WALL) as sb:
            r = sb.run(code)  # a tool host failure would raise out of run()
            assert r.error is None and r.stdout == "done\n" and len(r.tool_calls) == len(calls)
            canaries.assert_untouched(all_text(r))
            stop_and_42(sb)

    def test_tool_call_flood_from_many_threads(self, workspace, settings, canaries):
        (workspace / "doc.txt").write_text("INSIDE")
        code = (
            "import threading\nerrors = []\n"
            "def flood():\n    for _ in range(40):\n        try:\n            inspect_file_as_text('doc.txt')\n        except Exception as e:\n            errors.append(type(e).__name__)\n"
            "ts = [threading.Thread(target=flood) for _ in range(8)]\n[t.start() for t in ts]\n[t.join() for t in ts]"
        )
        limits = Limits(wall_s=30, max_tool_calls=64)
        with Sandbox(workspace, tools=host(settings, workspace, "inspect_file_as_text"), limits=limits) as sb:
            r = sb.run(code)
            assert r.limit_hit == "tool_calls" and r.restarted and len(r.tool_calls) == 64
            # a thread that calls tools after its step ended gets ToolErrors, and the parent is not confused
            r = sb.run(
                "import threading, time\nlate = []\n"
                "def later():\n    time.sleep(0.3)\n    try:\n        inspect_file_as_text('doc.txt')\n    except ToolError as e:\n        late.append(str(e))\n"
                "t = threading.Thread(target=later)\nt.start()"
            )
            time.sleep(0.6)
            r = sb.run("t.join()\nprint(late)")
            # the sandbox is frozen between steps, so the thread can only wake inside the next step:
            # before that step is marked as running its call is refused, after it the call is served
            assert "only be called while a step runs" in r.stdout or r.stdout == "[]\n"
            canaries.assert_untouched(all_text(r))
            stop_and_42(sb)

    # --- bombs ----------------------------------------------------------------------------------
    @pytest.mark.parametrize("tool,call", [
        ("ocr", "ocr('bomb.png')"),
        ("facedetection", "facedetection('bomb.png')"),
        ("segmentation", "segmentation('bomb.png', [0, 0, 10, 10])"),
        ("visualizer", "visualizer('What is this?', 'bomb.png')"),
    ])
    def test_pixel_bombs_are_refused_before_decoding(self, workspace, settings, canaries, tool, call):
        (workspace / "bomb.png").write_bytes(_pixel_bomb(30_000, 30_000))  # 900 megapixels in ~100 KB
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with Sandbox(workspace, tools=host(settings, workspace, tool), limits=WALL) as sb:
            t0 = time.monotonic()
            r = sb.run(f"try:\n    {call}\nexcept ToolError as e:\n    print(e)")
            assert time.monotonic() - t0 < 20
            assert r.error is None and "more than the 40,000,000 pixels" in r.stdout, r.stdout
            assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 300 * 1024  # KiB: the parent did not decode it
            canaries.assert_untouched(all_text(r))
            stop_and_42(sb)

    @pytest.mark.parametrize("name,make", [
        ("bomb.zip", lambda: _zip_bomb(640, members=5)),  # 640 MB from ~650 KB
        ("report.docx", lambda: _zip_bomb(200, members=2)),
        ("nested.zip", lambda: _zip_bomb(1, members=1, inner=_zip_bomb(200, members=2))),
        ("many.zip", lambda: _many_members(5000)),
    ])
    def test_archive_bombs_are_refused_before_markitdown(self, workspace, settings, canaries, name, make):
        data = make()
        assert len(data) < 3 * 1024 * 1024
        (workspace / name).write_bytes(data)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with Sandbox(workspace, tools=host(settings, workspace, "inspect_file_as_text"), limits=WALL) as sb:
            t0 = time.monotonic()
            r = sb.run(f"try:\n    inspect_file_as_text({name!r})\nexcept ToolError as e:\n    print(e)")
            assert time.monotonic() - t0 < 20
            assert r.error is None and "is refused: the archive" in r.stdout, r.stdout
            assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 300 * 1024
            canaries.assert_untouched(all_text(r))
            stop_and_42(sb)

    def test_a_decoder_that_runs_out_of_memory_or_time_is_an_error(self, workspace, settings, canaries, monkeypatch):
        from mmat.tools import bounded

        _png_bytes(6000, 6500, (1, 2, 3), workspace / "big.png")  # 39 megapixels (allowed): ~117 MB decoded
        with Sandbox(workspace, tools=host(settings, workspace, "ocr"), limits=WALL) as sb:
            monkeypatch.setattr(bounded, "DECODE_MEMORY_MB", 1)  # the decoder's budget: nothing more fits
            r = sb.run("try:\n    ocr('big.png')\nexcept ToolError as e:\n    print(e)")
            assert r.error is None and r.stdout.startswith("ocr: cannot open image 'big.png'"), r.stdout
            assert "memory" in r.stdout or "MemoryError" in r.stdout, r.stdout
            monkeypatch.setattr(bounded, "DECODE_MEMORY_MB", 1536)
            monkeypatch.setattr(bounded, "DECODE_TIMEOUT_S", 0.01)
            r = sb.run("try:\n    ocr('big.png')\nexcept ToolError as e:\n    print(e)")
            assert r.error is None and "longer than" in r.stdout, r.stdout
            canaries.assert_untouched(all_text(r))
            stop_and_42(sb)

    # --- resources during a step ----------------------------------------------------------------
    def test_several_processes_allocating_memory(self, workspace, settings, canaries):
        code = (
            "import os\nkids = []\nfor _ in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
            "        try:\n            b = bytearray(300 * 1024 * 1024)\n            b[::4096] = b'1' * len(b[::4096])\n        finally:\n            os._exit(0)\n"
            "    kids.append(pid)\nprint([os.waitpid(p, 0)[1] for p in kids])"
        )
        with Sandbox(workspace, limits=WALL) as sb:
            r = sb.run(code)
            assert r.error is None or r.limit_hit in ("memory", "wall_time")
            canaries.assert_untouched(all_text(r))
            stop_and_42(sb)

    def test_disk_and_inode_fill_and_deep_nesting(self, workspace, settings, canaries):
        code = (
            "import os\nfor i in range(3000):\n    open(f'f{i}', 'w').close()\n"
            "p = 'deep'\nos.makedirs(p)\nfor i in range(200):\n    os.chdir(p) if i == 0 else None\n    os.mkdir('d')\n    os.chdir('d')\n"
            f"os.symlink({str(canaries.vdir)!r}, 'bottom')\nos.chdir('/workspace')\n"
            "open('fill.bin', 'wb').write(b'0' * 1_500_000)"
        )
        limits = Limits(wall_s=20, file_size_mb=2, workspace_mb=1)
        with Sandbox(workspace, tools=host(settings, workspace, "inspect_file_as_text"), limits=limits) as sb:
            r = sb.run(code)
            assert r.limit_hit == "workspace" and r.restarted
            canaries.assert_untouched(all_text(r))
            stop_and_42(sb)
        # close() walked and chowned the whole tree back: nothing below the depth cap was followed
        canaries.assert_untouched()

    # --- output and the worker itself -----------------------------------------------------------
    def test_ansi_and_control_characters_are_escaped_everywhere(self, workspace, settings, canaries):
        (workspace / "doc.txt").write_text("INSIDE")
        evil = "\x1b[2J\x1b]0;owned\x07\u202e\x00\x9b"
        code = (
            f"evil = {evil!r}\nprint(evil)\nimport os\nos.write(1, evil.encode())\n"
            "try:\n    inspect_file_as_text(evil + '.txt')\nexcept ToolError as e:\n    print('tool error')\n"
            "raise ValueError(evil)"
        )
        with Sandbox(workspace, tools=host(settings, workspace, "inspect_file_as_text"), limits=WALL) as sb:
            r = sb.run(code)
            text = all_text(r) + r.error.type
            for c in "\x1b\x07\u202e\x00\x9b":
                assert c not in text, repr(c)
            assert "\\x1b[2J" in r.stdout and "\\u202e" in r.error.message
            r2 = sb.run(f"final_answer({evil!r})")
            assert "\x1b" not in r2.final_answer and r2.final_answer.startswith("\\x1b[2J")
            canaries.assert_untouched(all_text(r))
            stop_and_42(sb)

    @pytest.mark.parametrize("patch", [
        "import __main__\n__main__.Worker.run = lambda self, msg: None",
        "import __main__\n__main__.Worker._describe.__code__ = (lambda e: {}).__code__",
        "import __main__\n__main__._Channel.send = lambda self, msg: None",
        "import __main__\n__main__._dumps = lambda *a, **k: 'junk'",
        "import builtins\n_real_len = builtins.len\nbuiltins.len = lambda x: 0",
        "import os\nos.pread = lambda *a: b''",
    ])
    def test_a_step_that_patches_the_worker(self, workspace, settings, canaries, patch):
        with Sandbox(workspace, limits=WALL) as sb:
            sb.run("kept = 1")
            r = sb.run(patch)
            assert r.restarted and "changed the sandbox's own code" in r.stdout, (r.stdout, r.error)
            assert any(e["event"] == "stop" and e["reason"] == "tampered" for e in sb.events)
            assert sb.run("print(kept)").error.type == "NameError"  # a fresh worker from the read-only file
            canaries.assert_untouched(all_text(r))
            stop_and_42(sb)

    def test_a_thread_that_patches_the_worker_between_steps(self, workspace, settings, canaries):
        with Sandbox(workspace, limits=WALL) as sb:
            sb.run("import threading, time, __main__\ndef later():\n    time.sleep(0.2)\n    __main__.Worker._kill_leftovers = lambda self: None\nthreading.Thread(target=later).start()")
            time.sleep(0.5)
            r = sb.run("import time\ntime.sleep(0.5)\nprint('ran')")
            # frozen between steps, the thread patches during this step (caught at its end); without a
            # freeze it patches before it (caught at its start: the step is not run)
            assert r.restarted and (
                "changed the sandbox's own code" in r.stdout or (r.error.type == "SandboxTampered" and "ran" not in r.stdout)
            ), (r.stdout, r.error)
            canaries.assert_untouched(all_text(r))
            stop_and_42(sb)


def _many_members(n: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for i in range(n):
            z.writestr(f"m{i}", b"")
    return buf.getvalue()
