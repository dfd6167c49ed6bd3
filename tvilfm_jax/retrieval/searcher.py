"""An RGB gallery and its model, loaded once, answering queries: what `python -m tvilfm_jax.search`
does for one query and `python -m tvilfm_jax.serve` for each request.

A query is an IR image (uint8 [H, W, 3], or a row of an IR features directory with its stored
features and caption features), a description, or both; it is embedded with the gallery's model
and settings (image size, dtype, flip), then scored against the gallery kind of each modality
(`embedding.GALLERY_KIND_OF`) by `index`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np

from tvilfm_jax.eval.features import FeatureExtractor, ImageFeatures
from tvilfm_jax.eval.runner import load_model, require_trained_text, with_dtype
from tvilfm_jax.eval.settings import MODALITIES, EvalSettings
from tvilfm_jax.models.tvilfm import TVILFM
from tvilfm_jax.retrieval import embedding, index, ranking, store

NO_IR_CAPTION = "no --ir_caption: Fusion / MER use F = f_IR + T(text), with no IR caption subtracted"


class Searcher:
    """The gallery of `gallery_dir` and its model (`model`, default the one its meta.json names;
    another model is a ValueError). The extractor's jitted functions compile on first use and
    are reused by every later query."""

    def __init__(self, gallery_dir: str | os.PathLike, model: str | os.PathLike | None = None):
        gallery = store.open_features(gallery_dir)
        if gallery.meta["modality"] != "rgb":
            raise ValueError(f"{gallery_dir} holds {gallery.meta['modality']} features; the gallery must be "
                             "RGB (extract --modality rgb)")
        expected = gallery.meta["model"]
        config, variables, model_path = load_model(model or expected["path"])
        if store.model_fingerprint(config, variables) != expected["fingerprint"]:
            raise ValueError(f"{os.path.join(gallery_dir, store.META_FILE)}: the gallery holds features of model "
                             f"{expected['path']} (fingerprint {expected['fingerprint'][:12]}), --model {model_path} "
                             "is another model; extract the gallery with the model you search with")
        self.gallery, self.config, self.model_path = gallery, config, model_path
        self.settings = gallery.meta["settings"]
        self.extractor = FeatureExtractor(with_dtype(TVILFM(config), self.settings["dtype"]), 1,
                                          tuple(self.settings["image_size"]), progress=False)
        self.variables = jax.device_put(variables)

    def require_text(self, modalities: Sequence[str]) -> None:
        """A ValueError if `modalities` use text and the model is a stage-1 one (untrained text tower)."""
        require_trained_text(self.config, EvalSettings(modalities=tuple(modalities)), self.model_path)

    def open_queries(self, directory: str | os.PathLike) -> store.Features:
        """An IR features directory of queries, checked to come from the gallery's model and settings."""
        queries = store.open_features(directory)
        meta = os.path.join(directory, store.META_FILE)
        if queries.meta["modality"] != "ir":
            raise ValueError(f"{meta}: --queries must hold IR features (extract --modality ir), it holds "
                             f"{queries.meta['modality']}")
        for key, value in (("model", lambda m: m["model"]["fingerprint"]), ("settings", lambda m: m["settings"])):
            if value(queries.meta) != value(self.gallery.meta):
                raise ValueError(f"{meta}: the queries were extracted with another {key} than the gallery "
                                 f"{self.gallery.directory}; extract both with the same model and settings")
        return queries

    def image_features(self, image: np.ndarray) -> ImageFeatures:
        """Pre-neck features [1, D] of one uint8 [H, W, 3] IR image (flip TTA as the gallery's settings)."""
        flip = self.settings["flip"]
        return self.extractor.image_features(self.variables, [image], "ir", flip=flip).with_tta(flip)

    def warm_up(self) -> None:
        """Compiles every function a query uses (an IR image, a description, an IR caption) now,
        so that the first real query is as fast as the next ones."""
        image = np.zeros((*self.settings["image_size"], 3), np.uint8)
        wanted = MODALITIES if self.config.backup else ("ir",)
        text = "a person" if self.config.backup else None
        self.search(wanted, self.image_features(image), text, text, 1)

    def search(self, modalities: Sequence[str], image: ImageFeatures | None, text: str | None,
               ir_caption: str | None, top_k: int, *, stored_caption_feat: np.ndarray | None = None,
               index_kind: str = "exact", nprobe: int = index.DEFAULT_NPROBE
               ) -> tuple[dict[str, ranking.Ranking], list[str]]:
        """({modality: Ranking}, notes) of one query.

        image: its pre-neck features [1, D] (None: a text query); ir_caption: the IR image's own
        caption, else `stored_caption_feat` [1, D] (a stored query's) is subtracted by Fusion.
        index_kind "faiss" builds <kind>.faiss in the gallery directory on first use.
        A query that lacks what a modality needs is a ValueError.
        """
        encode = lambda s: self.extractor.text_features(self.variables, [s])  # noqa: E731
        t_text = None if text is None else encode(text)
        t_ir = stored_caption_feat if ir_caption is None else encode(ir_caption)
        vectors = embedding.query_vectors(self.extractor, self.variables, modalities, image, t_text, t_ir)
        rankings = {}
        for m, q in vectors.items():
            kind = embedding.GALLERY_KIND_OF[m]
            array = self.gallery.array(kind)
            if index_kind == "exact":
                scores, rows = index.exact_top_k(array, q, top_k)
            else:
                faiss_index = index.load_or_build_index(array, os.path.join(self.gallery.directory, f"{kind}.faiss"))
                scores, rows = index.faiss_top_k(faiss_index, q, top_k, nprobe, gallery=array)
            rankings[m] = ranking.Ranking(m, rows[0], scores[0])
        notes = [NO_IR_CAPTION] if t_ir is None and any(m in ("fusion", "mer") for m in modalities) else []
        return rankings, notes


def query_row(queries: store.Features, path: str) -> int:
    """The row of image `path` (as listed in index.jsonl) in `queries`; a ValueError if absent."""
    rows = [i for i, e in enumerate(queries.entries) if e.path == path.replace("\\", "/")]
    if not rows:
        raise ValueError(f"{os.path.join(queries.directory, store.INDEX_FILE)} has no image {path!r} "
                         "(expected a path as listed there)")
    return rows[0]


def stored_features(queries: store.Features, row: int) -> tuple[ImageFeatures, np.ndarray | None]:
    """(pre-neck features [1, D], caption features [1, D] or None) of row `row` of IR `queries`."""
    arrays = {k: np.asarray(queries.array(k)[row:row + 1]) for k in queries.meta["kinds"]}
    return embedding.stored_image_features(arrays), arrays.get("caption_feat")
