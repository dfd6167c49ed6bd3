"""What gets embedded, through the evaluator's `FeatureExtractor` and the model's heads.

Kinds stored per image modality (float32 [N, D] each):
  rgb (a gallery): "current" and "ir", the `TVILFM.gallery_heads` embeddings (L2-normalised):
      "ir" is the gallery of IR queries, "current" that of Text / Fusion / MER queries.
  ir (queries): the pre-neck features "feat_current" (+ "feat_backup" with backups) and, with
      captions, "caption_feat" (the caption's pre-neck text features, the Fusion "filter" t_ir):
      the query heads are applied at search time, with whatever description a query is given.

Query modalities (as in evaluation, docs/original.md §6.2-6.3), each a vector q [D] scored
q . g against one gallery kind:
  ir     q_ir (backup neck in stage 2)                     vs "ir"
  text   q_T = L2(BN(T(text)))                               vs "current"
  fusion q_F = L2(BN(f_IR + T(text) - T(IR caption)))        vs "current"
  mer    q_F + q_I + q_T (sum of the three cosines)          vs "current"
Without the IR image's own caption, Fusion / MER use t_ir = 0, i.e. F = f_IR + T(text) (the
"add" fusion), since nothing describes what the IR image itself shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from tvilfm_jax.eval.features import FeatureExtractor, ImageFeatures
from tvilfm_jax.eval.scoring import TEXT_MODALITIES
from tvilfm_jax.eval.settings import MODALITIES
from tvilfm_jax.models.tvilfm import ModelConfig

GALLERY_KINDS = ("current", "ir")
#: The gallery kind each query modality is scored against.
GALLERY_KIND_OF = {"ir": "ir", "text": "current", "fusion": "current", "mer": "current"}
assert set(GALLERY_KIND_OF) == set(MODALITIES)


def kinds(config: ModelConfig, modality: str, with_captions: bool) -> dict[str, int]:
    """{kind: D} an extract of `modality` images stores (see the module docstring)."""
    if modality == "rgb":
        names = GALLERY_KINDS
    else:
        names = ("feat_current",) + (("feat_backup",) if config.backup else ()) + \
                (("caption_feat",) if with_captions else ())
    return {k: config.embed_dim for k in names}


def embed_images(extractor: FeatureExtractor, variables, images: Sequence[np.ndarray], modality: str, flip: bool,
                 captions: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The stored kinds of uint8 [n, H, W, 3] images (and their captions) -> {kind: float32 [n, D]}."""
    feats = extractor.image_features(variables, images, modality, flip=flip).with_tta(flip)
    if modality == "rgb":
        out = extractor.gallery_embeddings(variables, feats)
    else:
        out = {"feat_current": feats.current}
        if feats.backup is not None:
            out["feat_backup"] = feats.backup
        if captions is not None:
            out["caption_feat"] = extractor.text_features(variables, list(captions))
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def stored_image_features(arrays: dict[str, np.ndarray]) -> ImageFeatures:
    """`ImageFeatures` of rows of an IR features file ({"feat_current"[, "feat_backup"]} [n, D])."""
    backup = arrays.get("feat_backup")
    return ImageFeatures(jnp.asarray(arrays["feat_current"]), None if backup is None else jnp.asarray(backup))


def query_vectors(extractor: FeatureExtractor, variables, modalities: Sequence[str], image: ImageFeatures | None,
                  t_text: np.ndarray | None, t_ir: np.ndarray | None) -> dict[str, np.ndarray]:
    """{modality: float32 [n, D]} query vectors for the gallery kind `GALLERY_KIND_OF[modality]`.

    image: pre-neck IR features of n queries (None: text only); t_text / t_ir: pre-neck caption
    features [n, D] of the description and of the IR image's own caption (None: not given).
    """
    if image is None:
        if any(m != "text" for m in modalities):
            raise ValueError(f"query modalities {[m for m in modalities if m != 'text']} need an IR query image")
        return {"text": np.asarray(extractor.embed(variables, jnp.asarray(t_text)), np.float32)}
    if t_text is None and any(m in TEXT_MODALITIES for m in modalities):
        raise ValueError(f"query modalities {[m for m in modalities if m in TEXT_MODALITIES]} need a description "
                         "(--text)")
    zeros = jnp.zeros_like(image.current)
    t_text = zeros if t_text is None else jnp.asarray(t_text)
    t_ir = zeros if t_ir is None else jnp.asarray(t_ir)
    q = extractor.query_embeddings(variables, image, t_text, t_ir)
    q = dict(q) | {"mer": q["fusion"] + q["ir_current"] + q["text"]}
    return {m: np.asarray(q[m], np.float32) for m in modalities}
