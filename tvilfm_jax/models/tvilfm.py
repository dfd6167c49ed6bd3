"""The assembled TVI-LFM model (docs/original.md §1, §3.3-3.4, §6.2-6.3).

Variable tree (top level), chosen so optimizer groups (docs/original.md §4.5) are path prefixes:
  visual/{rgb_stem,ir_stem,body}   dual-stem ResNet (params + batch_stats)
  gem/p                            GeM exponent
  neck/{bn,classifier}             BN-neck (params + batch_stats) and bias-free classifier
  text/...                         CLIP text tower (see models/text.py)
  backup_gem, backup_neck          only with `config.backup`: the frozen stage-1 GeM + neck used
                                   by the IR-only query and its gallery (docs/original.md §1.7)

Call the methods through `model.apply(variables, ..., method="stage1")`; train-mode methods
update BN statistics, so pass `mutable=["batch_stats"]`. Images are NHWC float32 (normalised),
token ids int32 [N, 77]. B = per-modality batch, D = embedding dim, C = classes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tvilfm_jax.models.fusion import FUSIONS, fuse
from tvilfm_jax.models.gem import GeM
from tvilfm_jax.models.neck import BNNeck
from tvilfm_jax.models.resnet import RESNET50_BLOCKS, DualResNet, feature_dim
from tvilfm_jax.models.text import CLIPTextEncoder, TextConfig


def _dtype_name(dtype: Any) -> str:
    return jnp.dtype(dtype).name


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the model (a model artifact's model.json, see `tvilfm_jax.artifacts`).

    Attributes:
      num_classes: training identities C (SYSU 395, RegDB 206, LLCM 713).
      resnet_blocks, resnet_width: bottlenecks per layer and base width; ResNet-50 by default.
        The visual feature size is 32 * resnet_width (2048), and must equal `text.embed_dim`
        (the original's img_projection is the identity, docs/original.md §1.2).
      text: CLIP text tower config; its `dtype` is overridden by `dtype` below.
      fusion: "sff" (F = f_IR + T_rgb - T_ir, the TVI-LFM default) or "add" (F = f_IR + T_rgb).
      backup: carry `backup_gem` / `backup_neck` (stage 2, docs/original.md §1.7).
      dtype: compute dtype of the ResNet and the text tower ("float32" or "bfloat16"); params,
        BN statistics, GeM, neck and losses stay fp32.
    """

    num_classes: int
    resnet_blocks: tuple[int, ...] = RESNET50_BLOCKS
    resnet_width: int = 64
    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    fusion: str = "sff"
    backup: bool = False
    dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "resnet_blocks", tuple(int(b) for b in self.resnet_blocks))
        object.__setattr__(self, "dtype", _dtype_name(self.dtype))
        if self.num_classes < 1:
            raise ValueError(f"ModelConfig.num_classes must be positive, got {self.num_classes}")
        if len(self.resnet_blocks) != 4 or min(self.resnet_blocks) < 1:
            raise ValueError(f"ModelConfig.resnet_blocks must be four positive counts, got {self.resnet_blocks}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"ModelConfig.fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"ModelConfig.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.text.embed_dim != self.embed_dim:
            raise ValueError(
                f"ModelConfig: text.embed_dim ({self.text.embed_dim}) must equal the visual feature size "
                f"32 * resnet_width = {self.embed_dim}"
            )

    @property
    def embed_dim(self) -> int:
        """D: size of every feature entering the neck."""
        return feature_dim(self.resnet_width)

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    def to_dict(self) -> dict:
        text = {f.name: getattr(self.text, f.name) for f in dataclasses.fields(self.text)}
        text = {k: _dtype_name(v) if k == "dtype" else v for k, v in text.items()}
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(text=text, resnet_blocks=list(self.resnet_blocks))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "model config") -> ModelConfig:
        """Inverse of `to_dict`; unknown keys raise (naming them and `source`)."""
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ValueError(f"{source}: unknown ModelConfig key(s) {extra}; expected a subset of {sorted(known)}")
        if "num_classes" not in d:
            raise ValueError(f"{source}: missing required key 'num_classes'")
        if "text" in d and isinstance(d["text"], Mapping):
            text = dict(d["text"])
            text_known = {f.name for f in dataclasses.fields(TextConfig)}
            bad = sorted(set(text) - text_known)
            if bad:
                raise ValueError(f"{source}: unknown TextConfig key(s) {bad}; expected a subset of {sorted(text_known)}")
            if "dtype" in text:  # the scalar type (jnp.float32), as TextConfig's default, for equal hashes
                text["dtype"] = getattr(jnp, _dtype_name(text["dtype"]))
            d["text"] = TextConfig(**text)
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model config") -> ModelConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{source}: not valid JSON ({err})") from err
        if not isinstance(d, Mapping):
            raise ValueError(f"{source}: expected a JSON object, got {type(d).__name__}")
        return cls.from_dict(d, source)

    def architecture_differences(self, other: ModelConfig) -> list[str]:
        """The fields where `other` builds a different variable tree, as "key: mine vs other"
        (e.g. "text.layers: 12 vs 2"); compute dtype and backup aside."""

        def arch(c: ModelConfig) -> dict:
            d = c.to_dict()
            d.pop("dtype"), d.pop("backup"), d["text"].pop("dtype")
            return d

        mine, theirs = arch(self), arch(other)
        out = []
        for key in sorted(mine):
            if isinstance(mine[key], Mapping):
                out += [f"text.{k}: {mine[key][k]!r} vs {theirs[key][k]!r}" for k in sorted(mine[key])
                        if mine[key][k] != theirs[key][k]]
            elif mine[key] != theirs[key]:
                out.append(f"{key}: {mine[key]!r} vs {theirs[key]!r}")
        return out


class TVILFM(nn.Module):
    """Dual-stem ResNet + GeM + CLIP text tower + SFF fusion + shared BN-neck."""

    config: ModelConfig

    def setup(self):
        c = self.config
        self.visual = DualResNet(c.resnet_blocks, c.resnet_width, dtype=c.compute_dtype)
        self.gem = GeM()
        self.neck = BNNeck(c.num_classes)
        self.text = CLIPTextEncoder(dataclasses.replace(c.text, dtype=c.compute_dtype))
        if c.backup:
            self.backup_gem = GeM()
            self.backup_neck = BNNeck(c.num_classes)

    def __call__(self, rgb: jnp.ndarray, ir: jnp.ndarray, text_ids: jnp.ndarray) -> dict[str, jnp.ndarray]:
        """Touches every sub-module once, so `init` creates all variables (visual BN in eval mode).

        rgb [Nr,H,W,3], ir [Ni,H,W,3], text_ids [M,L] -> see `heads`.
        """
        return self.heads(self.visual(rgb, ir, train=False), text_ids)

    def heads(self, fmap: jnp.ndarray, text_ids: jnp.ndarray) -> dict[str, jnp.ndarray]:
        """Every sub-module but the ResNet, necks in train mode (which creates the classifiers).

        fmap [N,h,w,D], text_ids [M,L] -> {"logits": [N+M, C]} (+ "backup_logits" [N, C]).
        """
        feats = jnp.concatenate([self.gem(fmap), self.text_features(text_ids)], axis=0)
        out = {"logits": self.neck(feats, train=True)[1]}
        if self.config.backup:
            out["backup_logits"] = self.backup_neck(self.backup_gem(fmap), train=True)[1]
        return out

    # --- features before the neck -------------------------------------------------------------

    def image_features(self, rgb: jnp.ndarray | None = None, ir: jnp.ndarray | None = None,
                       train: bool = False) -> jnp.ndarray:
        """GeM features: rgb [Nr,H,W,3], ir [Ni,H,W,3] (either may be None) -> [Nr+Ni, D] fp32.

        In train mode the shared body's BN statistics cover both modalities at once.
        """
        return self.gem(self.visual(rgb, ir, train=train))

    def text_features(self, ids: jnp.ndarray) -> jnp.ndarray:
        """EOT caption features: ids int32 [N,L] -> [N,D] fp32."""
        return self.text(ids).astype(jnp.float32)

    def fusion_features(self, ir: jnp.ndarray, text_rgb: jnp.ndarray, text_ir: jnp.ndarray | None = None,
                        train: bool = False) -> jnp.ndarray:
        """Fused IR+text features: ir [B,H,W,3], text_rgb/text_ir [B,L] -> [B,D] (pre-BN).

        `text_ir` is needed for "sff" only; both caption sets go through the text tower in one call.
        """
        f_ir = self.image_features(None, ir, train=train)
        t_rgb, t_ir = self._caption_features(text_rgb, text_ir)
        return fuse(self.config.fusion, f_ir, t_rgb, t_ir)

    def _caption_features(self, text_rgb: jnp.ndarray, text_ir: jnp.ndarray | None):
        """One text call for [text_rgb; text_ir] -> (t_rgb [B,D], t_ir [B,D] or None)."""
        if self.config.fusion != "sff":
            return self.text_features(text_rgb), None
        if text_ir is None:
            raise ValueError("SFF fusion needs the IR captions (text_ir)")
        if text_ir.shape != text_rgb.shape:
            raise ValueError(f"text_rgb {text_rgb.shape} and text_ir {text_ir.shape} must have the same shape")
        t = self.text_features(jnp.concatenate([text_rgb, text_ir], axis=0))
        b = text_rgb.shape[0]
        return t[:b], t[b:]

    # --- training forwards --------------------------------------------------------------------

    def stage1(self, rgb1: jnp.ndarray, rgb2: jnp.ndarray, ir: jnp.ndarray):
        """Base model forward (docs/original.md §3.3): RGB view1/view2 and IR [B,H,W,3] each ->
        (pre-BN features [3B,D] ordered [rgb1; rgb2; ir], logits [3B,C]).

        Visual BN, GeM and the neck are all in train mode; text is not used.
        """
        feats = self.image_features(jnp.concatenate([rgb1, rgb2], axis=0), ir, train=True)
        return self.neck(feats, train=True)

    def stage2(self, rgb1: jnp.ndarray, rgb2: jnp.ndarray, ir: jnp.ndarray, text_rgb: jnp.ndarray,
               text_ir: jnp.ndarray | None = None, freeze_visual_stats: bool = False):
        """TVI-LFM forward with a frozen visual encoder (docs/original.md §3.4, MJL "uni" + SFF).

        rgb1, rgb2, ir: [B,H,W,3]; text_rgb, text_ir: [B,L] (text_ir only for "sff") ->
        (pre-BN features [5B,D] ordered [rgb1; rgb2; ir; fusion; text], logits [5B,C]).

        The visual features are constants (stop_gradient). As in the original, the visual BN runs
        in train mode and keeps updating its running statistics; `freeze_visual_stats=True`
        (the "clean" recipe) runs it in eval mode instead, so the frozen encoder truly stays fixed.
        The neck is in train mode over all 5B rows.
        """
        b = ir.shape[0]
        if rgb1.shape[0] != b or rgb2.shape[0] != b:
            raise ValueError(f"stage2 needs equal batches, got rgb1 {rgb1.shape[0]}, rgb2 {rgb2.shape[0]}, ir {b}")
        feats = self.image_features(jnp.concatenate([rgb1, rgb2], axis=0), ir, train=not freeze_visual_stats)
        feats = jax.lax.stop_gradient(feats)
        f_ir = feats[2 * b:]
        t_rgb, t_ir = self._caption_features(text_rgb, text_ir)
        fused = fuse(self.config.fusion, f_ir, t_rgb, t_ir)
        return self.neck(jnp.concatenate([feats, fused, t_rgb], axis=0), train=True)

    # --- evaluation (eval-mode BN everywhere) ------------------------------------------------
    # Two levels: the network passes up to the pre-neck features (`eval_image_features`,
    # `text_features`), and the heads from those features (`embed`, `gallery_heads`,
    # `query_heads`, `ir_heads`), so that evaluation runs each image and caption through the network once
    # and applies the heads per caption assignment and trial. `gallery_embeddings` and
    # `query_embeddings` chain the two for whole images and token ids.

    def eval_image_features(self, rgb: jnp.ndarray | None = None,
                            ir: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
        """Pre-neck GeM features of rgb [Nr,H,W,3] and/or ir [Ni,H,W,3] -> dict of [Nr+Ni, D]:
        "current" (the current GeM), plus "backup" (backup_gem) when the model has backups.
        """
        fmap = self.visual(rgb, ir, train=False)
        out = {"current": self.gem(fmap)}
        if self.config.backup:
            out["backup"] = self.backup_gem(fmap)
        return out

    def embed(self, feats: jnp.ndarray) -> jnp.ndarray:
        """L2(BN(feats)) through the current neck: pre-neck features [N,D] -> [N,D]."""
        return self.neck(feats, train=False)

    def _ir_head(self, backup: jnp.ndarray | None, current: jnp.ndarray) -> jnp.ndarray:
        """The IR-only head (docs/original.md §6.2): backup features [N,D] through backup_neck
        when the model has backups, else the current-neck embedding `current` [N,D] itself."""
        if not self.config.backup:
            return current
        if backup is None:
            raise ValueError("this model has backup heads (config.backup): pass the backup GeM features")
        return self.backup_neck(backup, train=False)

    def gallery_heads(self, current: jnp.ndarray, backup: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
        """RGB gallery from pre-neck features [N,D] (`eval_image_features`) -> {"current", "ir"} of [N,D].

        "current" = L2(BN(f_rgb)) with the current neck: the gallery of the text, fusion and MER
        queries. "ir" is the gallery of the IR-only query: the backup features through
        backup_neck when the model has backups (docs/original.md §6.2), else "current".
        """
        current = self.embed(current)
        return {"current": current, "ir": self._ir_head(backup, current)}

    def query_heads(self, f_ir: jnp.ndarray, f_ir_backup: jnp.ndarray | None, t_rgb: jnp.ndarray,
                    t_ir: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
        """IR queries (docs/original.md §6.2-6.3) from pre-neck features: f_ir / f_ir_backup
        (`eval_image_features`) and caption features t_rgb / t_ir (`text_features`, t_ir for
        "sff" only), all [B,D] -> dict of [B,D]:

          "ir":         L2(BN_backup(f_ir_backup)) with backups, else "ir_current"; matches gallery "ir".
          "ir_current": q_I = L2(BN(f_ir)) through the CURRENT neck (a term of MER).
          "text":       q_T = L2(BN(t_rgb)).
          "fusion":     q_F = L2(BN(f_ir + t_rgb - t_ir))  ("add": without - t_ir).
        All but "ir" match against gallery "current"; MER is q_F + q_I + q_T (`with_mer`).
        """
        return self.ir_heads(f_ir, f_ir_backup) | {
            "text": self.embed(t_rgb),
            "fusion": self.embed(fuse(self.config.fusion, f_ir, t_rgb, t_ir)),
        }

    def ir_heads(self, f_ir: jnp.ndarray, f_ir_backup: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
        """The image-only IR queries of `query_heads` ("ir", "ir_current"), from f_ir / f_ir_backup
        [B,D] (`eval_image_features`) -> dict of [B,D]; no caption needed."""
        q_i = self.embed(f_ir)
        return {"ir": self._ir_head(f_ir_backup, q_i), "ir_current": q_i}

    def gallery_embeddings(self, rgb: jnp.ndarray) -> dict[str, jnp.ndarray]:
        """RGB gallery: rgb [N,H,W,3] -> {"current": [N,D], "ir": [N,D]}, L2-normalised (`gallery_heads`)."""
        feats = self.eval_image_features(rgb, None)
        return self.gallery_heads(feats["current"], feats.get("backup"))

    def query_embeddings(self, ir: jnp.ndarray, text_rgb: jnp.ndarray,
                         text_ir: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
        """IR queries: ir [B,H,W,3], token ids text_rgb/text_ir [B,L] -> the `query_heads` dict of
        [B,D] plus "mer" = q_F + q_I + q_T, not renormalised, so its scores against gallery
        "current" are the sum of the three cosine scores (docs/original.md §6.3).
        """
        feats = self.eval_image_features(None, ir)
        t_rgb, t_ir = self._caption_features(text_rgb, text_ir)
        return with_mer(self.query_heads(feats["current"], feats.get("backup"), t_rgb, t_ir))


def with_mer(queries: Mapping[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
    """A `TVILFM.query_heads` dict plus "mer" = q_F + q_I + q_T [B,D] (docs/original.md §6.3), not
    renormalised: its score against gallery "current" is the sum of the three cosine scores."""
    return dict(queries) | {"mer": queries["fusion"] + queries["ir_current"] + queries["text"]}


def init_variables(config: ModelConfig, rng: jax.Array, image_hw: tuple[int, int] = (32, 16),
                   include_visual: bool = True) -> dict:
    """Fresh {"params", "batch_stats"} for `TVILFM(config)` (any image size works: pooling is global).

    `include_visual=False` leaves out the "visual" subtrees, for callers that convert the ResNet
    from a checkpoint anyway: random-initialising a ResNet-50 costs tens of seconds of XLA:CPU
    compilation. A `jax.random.key(seed, impl="rbg")` also compiles faster than threefry on CPU.
    """
    model = TVILFM(config)
    ids = jnp.zeros((1, config.text.context_length), jnp.int32)
    if include_visual:
        h, w = image_hw
        image = jnp.zeros((1, h, w, 3), jnp.float32)
        variables = model.init(rng, image, image, ids)
    else:
        fmap = jnp.zeros((2, 1, 1, config.embed_dim), jnp.float32)
        variables = model.init(rng, fmap, ids, method=TVILFM.heads)
    return {"params": dict(variables["params"]), "batch_stats": dict(variables["batch_stats"])}


def add_backup(variables: Mapping[str, Any]) -> dict:
    """Stage-2 start (docs/original.md §1.7): copies gem/neck into backup_gem/backup_neck (params and stats).

    Use with a config whose `backup` is True; the copies are separate arrays.
    """
    out = {}
    for collection, tree in variables.items():
        tree = dict(tree)
        for src, dst in (("gem", "backup_gem"), ("neck", "backup_neck")):
            if src in tree:
                tree[dst] = jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), tree[src])
        out[collection] = tree
    return out

