"""Image pool: the builtin offline pool, folders with captions, search, cached embeddings."""

import csv
import io
import json

import duckdb
import numpy as np
import pytest
from PIL import Image

from mmat.embed import Embedder
from mmat.errors import ConfigError
from mmat.ids import sha256_bytes
from mmat.pool import BUILTIN_POOL, ImagePool
from mmat.store.schema import EMBED_DIM, MIGRATIONS

pytestmark = pytest.mark.embedded


class CountingEmbedder(Embedder):
    """The real embedder, counting the texts it embeds."""

    def __init__(self):
        super().__init__()
        self.texts: list[str] = []

    def embed(self, texts):
        self.texts.extend(texts)
        return Embedder.shared().embed(texts)


@pytest.fixture(scope="module")
def default_pool():
    return ImagePool.build_default()


def _write_png(path, color):
    Image.new("RGB", (40, 30), color).save(path)


def test_builtin_pool_images_are_png_with_content_ids(default_pool):
    assert len(default_pool) >= 20
    for img in default_pool:
        assert img.pool == BUILTIN_POOL and len(img.caption) > 40
        assert img.image_id == sha256_bytes(img.png)
        with Image.open(io.BytesIO(img.png)) as im:
            assert im.format == "PNG" and im.size == (img.width, img.height)
            assert max(im.size) <= 1024


def test_search_finds_the_astronaut(default_pool):
    best = default_pool.search("a person in a space suit", k=3)
    assert best[0].name == "astronaut"
    assert len({img.image_id for img in best}) == 3


@pytest.mark.parametrize(
    "text,name",
    [("a cup of espresso", "coffee"), ("galaxies in deep space", "deep_field"), ("a red motorcycle", "motorcycle"),
     ("a photo of a printed book page", "page"), ("an eye exam photo of the retina", "retina")],
)
def test_search_matches_captions(default_pool, text, name):
    assert default_pool.search(text)[0].name == name


def test_search_skips_excluded_images(default_pool):
    astronaut = default_pool.search("a person in a space suit")[0]
    second = default_pool.search("a person in a space suit", exclude=[astronaut.image_id])[0]
    assert second.image_id != astronaut.image_id
    assert default_pool.search("anything", k=0) == []


def test_rows_fit_the_pool_images_table(default_pool):
    con = duckdb.connect()
    for _, sql in MIGRATIONS:
        con.execute(sql)
    first = next(iter(default_pool))
    rows = default_pool.rows({first.image_id: "ab/cdef.png"})
    assert len(rows) == len(default_pool)
    by_id = {r["image_id"]: r for r in rows}
    assert by_id[first.image_id]["path"] == "ab/cdef.png"
    assert all(len(r["embedding"]) == EMBED_DIM for r in rows)
    cols = list(rows[0])
    con.executemany(
        f"INSERT INTO pool_images ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        [[r[c] for c in cols] for r in rows],
    )
    assert con.execute("SELECT count(*) FROM pool_images").fetchall() == [(len(rows),)]


def test_cached_embeddings_are_reused_unless_the_caption_changed(default_pool):
    rows = default_pool.rows()
    rows[0] = {**rows[0], "caption": "an outdated caption"}
    embedder = CountingEmbedder()
    fresh = ImagePool(list(default_pool), embedder=embedder)
    assert fresh.load_embeddings(rows) == len(rows) - 1
    fresh.search("a person in a space suit")
    stale = default_pool.get(rows[0]["image_id"])
    assert embedder.texts == [stale.caption, "a person in a space suit"]
    np.testing.assert_allclose(
        [r["embedding"] for r in fresh.rows()], [r["embedding"] for r in default_pool.rows()], atol=1e-5
    )


def test_add_folder_with_json_captions_and_sidecar_discovery(tmp_path):
    _write_png(tmp_path / "red.png", "red")
    _write_png(tmp_path / "blue.jpg", "blue")
    (tmp_path / "captions.json").write_text(json.dumps({"red.png": "a plain red square", "blue": "a plain blue square"}))
    pool = ImagePool(embedder=Embedder.shared())
    added = pool.add_folder(tmp_path)
    assert sorted(i.name for i in added) == ["blue", "red"]
    assert {i.pool for i in added} == {tmp_path.name}
    assert pool.search("something blue")[0].name == "blue"


def test_add_folder_with_csv_captions_and_caption_fn(tmp_path):
    _write_png(tmp_path / "a.png", "green")
    _write_png(tmp_path / "b.png", "yellow")
    captions = tmp_path.parent / "caps.csv"
    with captions.open("w", newline="") as f:
        csv.writer(f).writerows([["name", "caption"], ["a.png", "a green field"]])
    pool = ImagePool()
    added = pool.add_folder(tmp_path, captions_file=captions, caption_fn=lambda p: f"generated caption for {p.name}",
                            pool="mine")
    assert {i.name: i.caption for i in added} == {"a": "a green field", "b": "generated caption for b.png"}
    assert all(i.pool == "mine" for i in added)


def test_add_folder_refuses_uncaptioned_images(tmp_path):
    _write_png(tmp_path / "a.png", "green")
    _write_png(tmp_path / "b.png", "yellow")
    with pytest.raises(ConfigError, match="no captions .* captions.json"):
        ImagePool().add_folder(tmp_path)
    (tmp_path / "captions.json").write_text(json.dumps({"a.png": "green"}))
    with pytest.raises(ConfigError, match=r"1 image\(s\) .* no caption \(b.png\)"):
        ImagePool().add_folder(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        ImagePool().add_folder(tmp_path / "nope")


def _fresh_process_memo(monkeypatch):
    import mmat.pool as pool_module

    monkeypatch.setattr(pool_module, "_builtin", None)
    return pool_module


def test_a_store_with_the_builtin_images_spares_making_them(tmp_path, monkeypatch, default_pool):
    from mmat.config import load_settings
    from mmat.store import open_store
    from mmat.store.pool_images import load_pool

    settings = load_settings(home=tmp_path / "home")
    with open_store(settings) as store:
        first = load_pool(store)  # a fresh store: the builtin images are saved with their embeddings
    pool_module = _fresh_process_memo(monkeypatch)  # as a new process would start

    def no_skimage(*args):
        raise AssertionError("the builtin images were made again from scikit-image")

    monkeypatch.setattr(pool_module, "_skimage_pil", no_skimage)
    with open_store(settings) as store:
        again = load_pool(store)
    assert sorted(i.image_id for i in again) == sorted(i.image_id for i in first) == sorted(i.image_id for i in default_pool)
    by_id = {i.image_id: i for i in default_pool}
    for img in again:  # names and sources come from the captions file, the bytes from the store
        assert (img.name, img.source, img.caption, img.png) == (by_id[img.image_id].name, by_id[img.image_id].source,
                                                                by_id[img.image_id].caption, by_id[img.image_id].png)


def test_builtin_images_are_made_again_when_the_store_does_not_match(monkeypatch, default_pool):
    pool_module = _fresh_process_memo(monkeypatch)
    made: list[str] = []
    real = pool_module._skimage_pil
    monkeypatch.setattr(pool_module, "_skimage_pil", lambda loader, index: made.append(loader) or real(loader, index))
    stored = [img.model_copy(update={"caption": img.caption + " (edited)"}) if i == 0 else img
              for i, img in enumerate(default_pool)]  # one caption no longer matches the captions file
    images = pool_module.builtin_images(stored=lambda: stored)
    assert len(made) == len(images) == len(default_pool)
    assert [i.image_id for i in images] == [i.image_id for i in default_pool]
    assert pool_module.builtin_images() is images  # made once per process


def test_a_user_image_missing_from_the_blobs_is_a_clear_error(tmp_path):
    from mmat.config import load_settings
    from mmat.errors import StoreError
    from mmat.store import open_store
    from mmat.store.pool_images import add_pool_folder, load_pool

    folder = tmp_path / "mine"
    folder.mkdir()
    _write_png(folder / "red.png", (255, 0, 0))
    (folder / "captions.json").write_text(json.dumps({"red.png": "a plain red square used as a test picture"}))
    settings = load_settings(home=tmp_path / "home")
    with open_store(settings) as store:
        (added,) = add_pool_folder(store, folder)
        path = store.sql("SELECT path FROM pool_images WHERE image_id = ?", [added.image_id])[0]["path"]
        store.blob_path(path).unlink()
        with pytest.raises(StoreError, match="missing from the store's blobs"):
            load_pool(store)
