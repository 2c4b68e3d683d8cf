"""A captioned image pool that task synthesis draws its image files from.

MAT retrieves task images from a large captioned collection by embedding similarity instead of
asking a model to draw them; mmat does the same. The default pool works offline: the real photos that
scikit-image ships (no downloader), with captions written for mmat in ``assets/pool_captions.json``.
Users add folders of their own images with a sidecar captions file (JSON or CSV, name -> caption) or a
caption function (e.g. a multimodal teacher, see :class:`mmat.programs.ImageCaptioner`).

The pool knows nothing about the store. Caption embeddings are computed on demand; the runner saves
them with :meth:`ImagePool.rows` (rows of the ``pool_images`` table) and hands them back with
:meth:`ImagePool.load_embeddings`, so a rerun does not embed again.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mmat.embed import Embedder
from mmat.errors import ConfigError
from mmat.ids import sha256_bytes
from mmat.store.schema import EMBED_DIM

__all__ = ["PoolImage", "ImagePool", "BUILTIN_POOL", "IMAGE_SUFFIXES", "png_bytes", "builtin_images", "builtin_spec"]

BUILTIN_POOL = "builtin"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_SIDE = 1024  # longer images are downscaled: agents and VLM training gain nothing from bigger ones
CAPTION_FILES = ("captions.json", "captions.csv")
ASSETS_DIR = Path(__file__).parent / "assets"


class PoolImage(BaseModel):
    """One pool image, held as PNG bytes; ``image_id`` is the sha256 of those bytes."""

    model_config = ConfigDict(frozen=True)

    image_id: str
    pool: str = Field(description="builtin, or the name of the user folder it came from")
    name: str = Field(description="short name, used as the file name hint (no suffix)")
    caption: str
    width: int
    height: int
    source: str = Field(description="where it came from: skimage:<loader> or the original file path")
    png: bytes = Field(repr=False)

    def save(self, path: Path) -> Path:
        """Write the PNG to ``path`` (parents created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.png)
        return path


def png_bytes(image: Any) -> tuple[bytes, int, int]:
    """Encode a PIL image as PNG (downscaled to MAX_SIDE); returns (bytes, width, height)."""
    from PIL import Image

    if image.mode not in ("1", "L", "LA", "RGB", "RGBA", "P"):
        image = image.convert("RGB")
    if max(image.size) > MAX_SIDE:
        scale = MAX_SIDE / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue(), image.width, image.height


def _make_image(pil: Any, *, pool: str, name: str, caption: str, source: str) -> PoolImage:
    data, width, height = png_bytes(pil)
    return PoolImage(
        image_id=sha256_bytes(data), pool=pool, name=name, caption=caption.strip(),
        width=width, height=height, source=source, png=data,
    )


def _skimage_pil(loader: str, index: int | None) -> Any:
    import skimage.data
    from PIL import Image

    array = getattr(skimage.data, loader)()
    if index is not None:
        array = array[index]
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:  # float images in [0, 1]
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    return Image.fromarray(array)


def _read_captions_file(path: Path) -> dict[str, str]:
    """name -> caption from a JSON object or a two-column CSV (optional header name,caption)."""
    if not path.is_file():
        raise ConfigError(f"captions file {path} does not exist: pass an existing JSON or CSV file")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"captions file {path} is not valid JSON ({e}): write an object of name -> caption") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ConfigError(f"captions file {path} must be a JSON object mapping file name to caption text")
        return {str(k): v for k, v in data.items()}
    if path.suffix.lower() == ".csv":
        rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
        if rows and [c.strip().lower() for c in rows[0][:2]] in (["name", "caption"], ["file", "caption"]):
            rows = rows[1:]
        bad = [i for i, r in enumerate(rows) if len(r) < 2 or not r[1].strip()]
        if bad:
            raise ConfigError(f"captions file {path}: rows {bad[:5]} lack a caption; each row must be name,caption")
        return {r[0].strip(): r[1] for r in rows}
    raise ConfigError(f"captions file {path} must end in .json or .csv")


_builtin_lock = threading.Lock()
_builtin: tuple[PoolImage, ...] | None = None


def builtin_spec() -> list[dict[str, Any]]:
    """The builtin pool's entries (loader, index, name, caption) from ``assets/pool_captions.json``."""
    return list(json.loads((ASSETS_DIR / "pool_captions.json").read_text(encoding="utf-8"))["images"])


def builtin_images(*, stored: Callable[[], Iterable[PoolImage]] | None = None) -> tuple[PoolImage, ...]:
    """The builtin pool's images, made once per process.

    Why: decoding scikit-image's photos and encoding them as PNG costs about 2 s of CPU, which every
    ``mmat synth`` paid before its first LM call. ``stored`` (reads a store's copy of the builtin
    images; called only while the process has none yet) is taken instead when it holds every entry of
    the captions file, caption for caption; otherwise the images are made from scikit-image. PoolImage
    is frozen, so the tuple is shared safely."""
    global _builtin
    with _builtin_lock:
        if _builtin is None:
            spec = builtin_spec()
            by_caption = {img.caption: img for img in (stored() if stored else ()) if img.pool == BUILTIN_POOL}
            kept = [by_caption.get(item["caption"].strip()) for item in spec]
            if all(kept):
                _builtin = tuple(img.model_copy(update={"name": item["name"], "source": f"skimage:{item['loader']}"})
                                 for img, item in zip(kept, spec))  # type: ignore[union-attr]
            else:
                _builtin = tuple(
                    _make_image(_skimage_pil(item["loader"], item.get("index")), pool=BUILTIN_POOL, name=item["name"],
                                caption=item["caption"], source=f"skimage:{item['loader']}")
                    for item in spec
                )
        return _builtin


class ImagePool:
    """Images with captions, searchable by text through MiniLM caption embeddings."""

    def __init__(self, images: Iterable[PoolImage] = (), *, embedder: Embedder | None = None):
        self._embedder = embedder
        self._images: dict[str, PoolImage] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.add_images(images)

    def __getstate__(self) -> dict[str, Any]:
        # Pickled to other processes (Ray workers): the images and their vectors travel; the lock and the
        # embedder (a loaded model) do not — the receiver uses its own process-wide embedder.
        with self._lock:
            return {"images": list(self._images.values()), "vectors": dict(self._vectors)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["images"])
        self._vectors = dict(state["vectors"])

    def use_embedder(self, embedder: Any) -> None:
        """Embed searches and new captions with ``embedder`` (a pool that came from another process has none)."""
        self._embedder = embedder

    # --- building ------------------------------------------------------------------------------
    @classmethod
    def build_default(cls, *, embedder: Embedder | None = None,
                      stored: Callable[[], Iterable[PoolImage]] | None = None) -> ImagePool:
        """The builtin offline pool: scikit-image sample photos with mmat's captions (see builtin_images)."""
        return cls(builtin_images(stored=stored), embedder=embedder)

    def add_images(self, images: Iterable[PoolImage]) -> None:
        with self._lock:
            for image in images:
                self._images.setdefault(image.image_id, image)

    def add_folder(
        self,
        folder: Path,
        *,
        captions_file: Path | None = None,
        caption_fn: Callable[[Path], str] | None = None,
        pool: str | None = None,
    ) -> list[PoolImage]:
        """Add every image in ``folder`` (not recursive); returns the added images.

        Captions come from ``captions_file`` (JSON or CSV, keyed by file name or stem), else from a
        ``captions.json``/``captions.csv`` in the folder, else from ``caption_fn(path)``. An image with
        no caption is an error: a pool image without a caption cannot be retrieved.
        """
        from PIL import Image

        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError(f"image folder {folder} does not exist: pass a directory of images")
        if captions_file is None:
            captions_file = next((folder / n for n in CAPTION_FILES if (folder / n).is_file()), None)
        captions = _read_captions_file(Path(captions_file)) if captions_file is not None else {}
        if not captions and caption_fn is None:
            raise ConfigError(
                f"no captions for {folder}: add captions.json or captions.csv (name -> caption) or pass caption_fn"
            )
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise ConfigError(f"image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        pool_name = pool or folder.name
        added, missing = [], []
        for path in paths:
            caption = captions.get(path.name) or captions.get(path.stem)
            if caption is None and caption_fn is not None:
                caption = caption_fn(path)
            if not caption or not caption.strip():
                missing.append(path.name)
                continue
            with Image.open(path) as im:
                im.load()
                added.append(_make_image(im, pool=pool_name, name=path.stem, caption=caption, source=str(path)))
        if missing:
            raise ConfigError(
                f"{len(missing)} image(s) in {folder} have no caption ({', '.join(missing[:5])}): "
                "add them to the captions file or pass caption_fn"
            )
        self.add_images(added)
        return added

    def __deepcopy__(self, memo: dict) -> ImagePool:
        """Copies of a program (DSPy optimizers deep-copy them) share one pool: it holds a lock and
        read-mostly data, and every copy must search the same images."""
        return self

    # --- access --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._images)

    def __iter__(self) -> Iterator[PoolImage]:
        return iter(list(self._images.values()))

    def get(self, image_id: str) -> PoolImage:
        try:
            return self._images[image_id]
        except KeyError:
            raise KeyError(f"no pool image {image_id}") from None

    # --- embeddings ----------------------------------------------------------------------------
    def load_embeddings(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Accept cached vectors (``pool_images`` rows: image_id, caption, embedding).

        A vector is taken only when the row's caption equals the image's current caption, so an edited
        caption is re-embedded. Returns how many vectors were taken.
        """
        taken = 0
        with self._lock:
            for row in rows:
                image = self._images.get(row.get("image_id"))
                vec = row.get("embedding")
                if image is None or vec is None or row.get("caption") != image.caption:
                    continue
                arr = np.asarray(vec, dtype=np.float32)
                if arr.shape != (EMBED_DIM,):
                    continue
                self._vectors[image.image_id] = arr
                taken += 1
        return taken

    def _ensure_embeddings(self) -> None:
        with self._lock:
            todo = [img for img in self._images.values() if img.image_id not in self._vectors]
            if not todo:
                return
            embedder = self._embedder or Embedder.shared()
            vectors = embedder.embed([img.caption for img in todo])
            for img, vec in zip(todo, vectors, strict=True):
                self._vectors[img.image_id] = vec

    def rows(self, blob_paths: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Rows for the store's ``pool_images`` table, embeddings included.

        ``blob_paths`` maps image_id -> the blob path the runner stored the PNG under; without one the
        row's path is the image's source.
        """
        self._ensure_embeddings()
        blob_paths = blob_paths or {}
        return [
            {
                "image_id": img.image_id, "pool": img.pool, "path": blob_paths.get(img.image_id, img.source),
                "caption": img.caption, "width": img.width, "height": img.height,
                "embedding": [float(x) for x in self._vectors[img.image_id]],
            }
            for img in self._images.values()
        ]

    # --- search --------------------------------------------------------------------------------
    def search_scored(self, text: str, k: int = 1, *, exclude: Iterable[str] = ()) -> list[tuple[PoolImage, float]]:
        """The ``k`` images whose captions are most similar to ``text``, with cosine similarities."""
        if k < 1:
            return []
        self._ensure_embeddings()
        skip = set(exclude)
        candidates = [img for img in self._images.values() if img.image_id not in skip]
        if not candidates:
            return []
        embedder = self._embedder or Embedder.shared()
        query = embedder.embed([text])[0]
        matrix = np.stack([self._vectors[img.image_id] for img in candidates])  # [n, 384]
        scores = matrix @ query
        order = np.argsort(-scores, kind="stable")[:k]
        return [(candidates[i], float(scores[i])) for i in order]

    def search(self, text: str, k: int = 1, *, exclude: Iterable[str] = ()) -> list[PoolImage]:
        """The ``k`` images that best match ``text`` (best first), skipping ``exclude`` image_ids."""
        return [img for img, _ in self.search_scored(text, k, exclude=exclude)]
