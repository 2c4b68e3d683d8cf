"""The bounded decoder children (mmat.tools.bounded): no capabilities, no new privileges, no network,
none of the parent's environment, and they still decode."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from multiprocessing import forkserver
from pathlib import Path

import pytest
from PIL import Image

from mmat.tools import bounded


def test_a_decoder_child_has_no_capabilities_network_or_secrets(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-must-not-reach-a-decoder")
    probe = bounded.run_bounded("probe")
    status = probe["status"]
    # the bounding set only matters to a root parent (an unprivileged one cannot drop it, and with
    # no_new_privs and empty sets nothing can be gained from it)
    for key in ("CapInh", "CapPrm", "CapEff", "CapAmb", *(("CapBnd",) if os.geteuid() == 0 else ())):
        assert status[key] == "0000000000000000", (key, status)
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    assert probe["inet_socket"] == "EAFNOSUPPORT"  # no socket of any family but AF_UNIX
    assert set(probe["env"]) <= set(bounded._ENV_KEPT), probe["env"]
    assert "OPENAI_API_KEY" not in probe["env"]


def test_confined_decoders_still_decode_images_and_documents():
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), "blue").save(buf, "PNG")
    size, pixels = bounded.run_bounded("image", buf.getvalue(), 10**6)
    assert size == (64, 48) and pixels[:3] == b"\x00\x00\xff"
    status, text = bounded.run_bounded("document", b"<html><body><h1>Title</h1><p>body text</p></body></html>", ".html", "a.html")
    assert status == "ok" and "Title" in text and "body text" in text


def _ids(line: str) -> list[int]:
    return [int(x) for x in line.split()]


def test_a_decoder_child_runs_as_a_fresh_stranger_in_root_mode_and_as_the_caller_rootless():
    """Root mode: real/effective/saved/fs uid and gid of each child are a fresh non-0 id, no groups,
    and a root-owned 0600 canary in a world-readable directory stays unreadable (its public sibling
    reads, so the probe itself works), and so does the forkserver's listener socket in root's 0700
    directory (as root, even without capabilities, a decoder could have connected to it and had the
    forkserver unpickle its message). Rootless: the caller's own uid (it has no other)."""
    shared = Path(tempfile.mkdtemp(prefix="mmat-decoder-canary-"))
    try:
        os.chmod(shared, 0o755)
        canary, public = shared / "secret", shared / "public"
        canary.write_text("canary")
        os.chmod(canary, 0o600)
        public.write_text("public")
        os.chmod(public, 0o644)
        bounded.run_bounded("probe")  # the forkserver is running from here on
        # the forkserver's listener (it unpickles what a client sends, as root): a decoder must not reach it
        listener = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_address", None)
        extra = [listener] if os.geteuid() == 0 and listener else []
        probes = [bounded.run_bounded("probe", str(canary), str(public), *extra) for _ in range(3)]
        for probe in probes:
            uids, gids = _ids(probe["status"]["Uid"]), _ids(probe["status"]["Gid"])
            assert len(uids) == len(gids) == 4, probe["status"]
            if os.geteuid() == 0:
                assert 0 not in uids and 0 not in gids, probe["status"]
                assert len(set(uids)) == 1 and set(uids) == set(gids)
                assert probe["status"]["Groups"] == "", probe["status"]
                assert probe["reads"] == {str(canary): "EACCES", str(public): "ok", **{p: "EACCES" for p in extra}}, probe["reads"]
                assert probe["view_error"] is None
            else:
                assert set(uids) == {os.getuid()} and set(gids) == {os.getgid()}
                assert probe["reads"][str(public)] == "ok"
        if os.geteuid() == 0:
            assert len({p["status"]["Uid"] for p in probes}) == 3  # a fresh uid per child
        assert canary.read_text() == "canary" and canary.stat().st_uid == os.geteuid()
        assert canary.stat().st_mode & 0o777 == 0o600
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="root mode only: a rootless decoder keeps the caller's uid")
def test_a_stranger_decoder_still_reaches_a_runtime_under_a_closed_directory():
    """The interpreter may sit under a 0700 directory (pyenv in /root): the forkserver's view exposes
    the runtime there, and only it. A stdlib module no decoder imported before loads in the child."""
    stdlib = os.path.dirname(os.__file__)
    probe = bounded.run_bounded("probe", os.path.join(stdlib, "os.py"), os.path.join(stdlib, "this.py"))
    assert set(probe["reads"].values()) == {"ok"}, probe["reads"]
    closed = [p for p in Path(stdlib).parents if not p.stat().st_mode & 0o001]
    if closed:  # e.g. /root: its other entries are not in the decoders' view at all
        hidden = next((c for c in closed[-1].iterdir() if not str(stdlib).startswith(str(c))), None)
        if hidden is not None:
            assert bounded.run_bounded("probe", str(hidden))["reads"][str(hidden)] == "ENOENT"


def test_closed_tops_covers_the_outermost_closed_directory_only():
    from mmat.tools._decoder_view import closed_tops

    base = Path(tempfile.mkdtemp(prefix="mmat-closed-tops-"))  # in the system temp dir (1777), not pytest's 0700 one
    try:
        top = base / "home"
        (top / "a" / "venv").mkdir(parents=True)
        (top / "b").mkdir()
        (base / "open").mkdir()
        for d in (base, top / "a", top / "a" / "venv", base / "open"):
            os.chmod(d, 0o755)
        os.chmod(top, 0o700)
        os.chmod(top / "b", 0o700)
        groups = closed_tops([str(top / "a" / "venv"), str(top / "b"), str(base / "open")])
        # venv: exposed under its closed ancestor; b is closed itself (nothing to expose); open needs nothing
        assert groups == {str(top): [str(top / "a" / "venv")]}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_runtime_inside_a_closed_checkout_is_exposed_by_its_open_parts():
    """A fresh clone in a 0700 directory (mktemp -d) holding the venv: the checkout itself must not be
    what is bound (its 0700 would hide the venv again); its open venv and package are, under it."""
    from mmat.tools._decoder_view import closed_tops, outermost_open

    base = Path(tempfile.mkdtemp(prefix="mmat-closed-clone-"))
    try:
        clone = base / "clone"
        site = clone / ".venv" / "lib" / "site-packages"
        site.mkdir(parents=True)
        (clone / "mmat").mkdir()
        for d in (base, clone / ".venv", clone / ".venv" / "lib", site, clone / "mmat"):
            os.chmod(d, 0o755)
        os.chmod(clone, 0o700)
        kept = outermost_open(sorted(str(p) for p in (clone, clone / ".venv", site, clone / "mmat")))
        assert kept == [str(clone / ".venv"), str(clone / "mmat")]
        assert closed_tops(kept) == {str(clone): kept}
        os.chmod(clone, 0o755)  # an open checkout: bound whole, as before
        assert outermost_open(sorted(str(p) for p in (clone, site, clone / "mmat"))) == [str(clone)]
    finally:
        shutil.rmtree(base, ignore_errors=True)
