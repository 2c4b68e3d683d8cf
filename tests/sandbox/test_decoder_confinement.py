"""The bounded decoder children (mmat.tools.bounded): no capabilities, no new privileges, no network,
none of the parent's environment, and they still decode."""

from __future__ import annotations

import io
import os

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
