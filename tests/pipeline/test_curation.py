"""`mmat pool add` is a run (kind pool) like every other command that writes."""

import json

from click.testing import CliRunner
from PIL import Image

from mmat.cli import cli
from mmat.config import load_settings
from mmat.store import open_store


def test_pool_add_is_a_run(mmat_home, tmp_path):
    folder = tmp_path / "shapes"
    folder.mkdir()
    Image.new("RGB", (32, 32), "red").save(folder / "red.png")
    (folder / "captions.json").write_text(json.dumps({"red.png": "a plain red square"}))
    result = CliRunner().invoke(cli, ["pool", "add", str(folder)])
    assert result.exit_code == 0, result.output
    assert "added 1 image(s)" in result.output
    with open_store(load_settings(), read_only=True) as store:
        [run] = store.sql("select status, command, summary, settings from runs where kind = 'pool'")
    assert (run["status"], run["command"]) == ("done", f"mmat pool add {folder}")
    assert json.loads(run["summary"]) == {"images": 1, "pool": "shapes"}
    assert json.loads(run["settings"])["folder"] == str(folder.resolve())
