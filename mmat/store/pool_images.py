"""The image pool as the store holds it: builtin photos plus folders added with `mmat pool add`.

The pool itself (mmat.pool) knows nothing of the store; this module persists images as blobs and
their caption embeddings in ``pool_images`` so a run embeds each caption once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from mmat.errors import StoreError
from mmat.pool import BUILTIN_POOL, ImagePool, PoolImage

__all__ = ["load_pool", "add_pool_folder"]


def _save(store, pool: ImagePool, images: list[PoolImage] | None = None) -> None:
    images = list(pool) if images is None else images
    blob_paths = {img.image_id: store.put_blob(img.png, ".png")[0] for img in images}
    wanted = set(blob_paths)
    store.writer.put("pool_images", [r for r in pool.rows(blob_paths) if r["image_id"] in wanted])
    store.writer.flush()


def load_pool(store, *, embedder=None) -> ImagePool:
    """Builtin images plus stored user images; caption embeddings computed only where none is cached.
    ``embedder``: what searches embed with (default: the process-wide MiniLM)."""
    rows = store.sql("SELECT image_id, pool, path, caption, width, height FROM pool_images")
    pool = ImagePool.build_default(
        embedder=embedder, stored=lambda: _stored_images(store, [r for r in rows if r["pool"] == BUILTIN_POOL]))
    pool.add_images(_stored_images(store, [r for r in rows if r["pool"] != BUILTIN_POOL], required=True))
    if pool.load_embeddings(store.sql("SELECT image_id, caption, embedding FROM pool_images")) < len(pool):
        _save(store, pool)
    return pool


def _stored_images(store, rows: list[dict], *, required: bool = False) -> list[PoolImage]:
    """Pool images from their rows and blobs. A builtin image whose blob is gone is made again; a user
    image's (``required``) is an error, since nothing else holds it."""
    images = []
    for r in rows:
        blob = store.blob_path(r["path"])
        if not blob.is_file():
            if required:
                raise StoreError(f"the pool image {r['path']} (pool {r['pool']!r}) is missing from the store's "
                                 f"blobs: add its folder again with `mmat pool add`")
            continue
        images.append(PoolImage(image_id=r["image_id"], pool=r["pool"], name=Path(r["path"]).stem,
                                caption=r["caption"], width=r["width"], height=r["height"], source=r["path"],
                                png=blob.read_bytes()))
    return images


def add_pool_folder(
    store, folder: Path, *, captions_file: Path | None = None, caption_fn: Callable[[Path], str] | None = None
) -> list[PoolImage]:
    """Index a folder of images (captions from a sidecar file or a caption function) into the store."""
    pool = ImagePool()
    added = pool.add_folder(folder, captions_file=captions_file, caption_fn=caption_fn)
    _save(store, pool, added)
    return added
