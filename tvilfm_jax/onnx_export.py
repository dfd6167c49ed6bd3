"""ONNX export of the evaluation encoders (jax2onnx), each checked in onnxruntime against JAX.

Encoders: what evaluation computes (`eval.features`: `normalize_images`, then the model's eval
heads), N rows per call; D = `ModelConfig.embed_dim`, (H, W) the training image size:

  gallery  rgb_image uint8 [N,H,W,3]                       -> current, ir      (`TVILFM.gallery_heads`)
  ir       ir_image uint8 [N,H,W,3]                        -> ir, ir_current   (`TVILFM.ir_heads`)
  text     ids int32 [N,L]                                 -> text             (`TVILFM.embed` of `text_features`)
  fusion   ir_image, text_rgb int32 [N,L], text_ir [N,L]   -> ir, ir_current, text, fusion, mer
                                                         (`TVILFM.query_heads` + `with_mer`; the "add"
                                                         fusion has no text_ir input)

Input contract: images are uint8 NHWC in RGB channel order, already at (H, W) (evaluation
Lanczos-resizes stored images, `data.images.resize`); the graph does ToTensor + ImageNet
Normalize. Token ids are `data.tokenizer.tokenize` rows (CLIP BPE, L = 77). Every output is
float32 [N, D] and L2-normalised, except mer (the sum of three unit rows). Gallery "current"
serves the text / fusion / MER queries and ir_current, gallery "ir" serves the "ir" query.

Graphs compute in float32 whatever dtype the model was trained in, as evaluation does by
default (`EvalSettings.dtype`). N is a symbolic dimension ("N") or a fixed batch size.

jax2onnx's flax plugin replaces `flax.linen.max_pool` while it traces and accepts only string
padding; the ResNet stem pads explicitly, so the export feeds it the same pooling as an
explicit -inf pad plus "VALID" (`_string_padding_max_pool`; max is exact, the numbers are the
same). Caption features are computed per caption set rather than for the concatenated pair
(`TVILFM.query_embeddings`), which jax2onnx's symbolic batch cannot slice; evaluation
(`FeatureExtractor`) computes them apart too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from importlib.metadata import version
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np

from tvilfm_jax.data.tokenizer import tokenize
from tvilfm_jax.eval.features import normalize_images
from tvilfm_jax.models.tvilfm import TVILFM, ModelConfig, with_mer

#: The ONNX opset of the exported graphs.
OPSET = 23
#: Max abs difference onnxruntime vs JAX (fp32) allowed per output element. The rows are unit
#: vectors (mer: a sum of three), so a score (a dot product with a unit row) moves by at most
#: sqrt(D) x this. Measured: ~1e-7 (a small random model), ~4e-8 (a random ResNet-50 + CLIP).
TOLERANCE = 1e-5
#: Name of the symbolic batch dimension.
DYNAMIC = "N"
MANIFEST = "encoders.json"
#: Encoders that go through the text tower, which only stage 2 trains.
TEXT_ENCODERS = ("text", "fusion")
# Captions the check tokenises (real CLIP ids, EOT included), cycled over the rows.
_CHECK_CAPTIONS = ("a woman in a red coat and black trousers carrying a bag",
                   "a man wearing a white shirt, blue jeans and dark shoes", "a person with long hair")


def _jax2onnx():
    """jax2onnx, imported on first use (the `export` extra, README), its logs kept to what matters."""
    # It imports a plugin for every library it supports and logs a traceback for each one missing
    # here (equinox, dm_pix), none used by this model; onnx_ir warns about shape helper values it
    # leaves untyped, which the onnxruntime check covers.
    logging.getLogger("jax2onnx.plugins.plugin_system").setLevel(logging.ERROR)
    logging.getLogger("onnx_ir.serde").setLevel(logging.ERROR)
    import jax2onnx

    return jax2onnx


@dataclasses.dataclass(frozen=True)
class Encoder:
    """One exported graph: input names, output names, and fn(model, variables, *inputs) -> dict."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    fn: Callable[..., Mapping[str, jax.Array]]
    doc: str


def _image_features(model, variables, images, modality):
    x = normalize_images(images)
    rgb, ir = (x, None) if modality == "rgb" else (None, x)
    return model.apply(variables, rgb, ir, method="eval_image_features")


def _text_features(model, variables, ids):
    return model.apply(variables, ids, method="text_features")


def _gallery(model, variables, rgb):
    feats = _image_features(model, variables, rgb, "rgb")
    return model.apply(variables, feats["current"], feats.get("backup"), method="gallery_heads")


def _ir(model, variables, ir):
    feats = _image_features(model, variables, ir, "ir")
    return model.apply(variables, feats["current"], feats.get("backup"), method="ir_heads")


def _text(model, variables, ids):
    return {"text": model.apply(variables, _text_features(model, variables, ids), method="embed")}


def _fusion(model, variables, ir, text_rgb, text_ir=None):
    feats = _image_features(model, variables, ir, "ir")
    t_ir = None if text_ir is None else _text_features(model, variables, text_ir)
    q = model.apply(variables, feats["current"], feats.get("backup"), _text_features(model, variables, text_rgb),
                    t_ir, method="query_heads")
    return with_mer(q)


ENCODERS = {
    "gallery": Encoder(("rgb_image",), ("current", "ir"), _gallery, "RGB gallery image -> embeddings"),
    "ir": Encoder(("ir_image",), ("ir", "ir_current"), _ir, "IR query image -> IR-only query embeddings"),
    "text": Encoder(("ids",), ("text",), _text, "RGB caption token ids -> text query embedding"),
    "fusion": Encoder(("ir_image", "text_rgb", "text_ir"), ("ir", "ir_current", "text", "fusion", "mer"), _fusion,
                      "IR image + RGB caption + IR caption -> every IR query embedding"),
}


def encoder_inputs(config: ModelConfig, name: str) -> tuple[str, ...]:
    """Input names of encoder `name` for this model ("add" fusion takes no IR caption)."""
    inputs = ENCODERS[name].inputs
    return inputs[:2] if name == "fusion" and config.fusion != "sff" else inputs


def input_specs(config: ModelConfig, name: str, image_size: tuple[int, int],
                batch: int | str) -> list[tuple[str, tuple, np.dtype]]:
    """[(input name, shape, dtype)] of encoder `name`; batch: an int or `DYNAMIC`."""
    image = ((batch, *image_size, 3), np.dtype(np.uint8))
    ids = ((batch, config.text.context_length), np.dtype(np.int32))
    return [(n, *(image if n.endswith("_image") else ids)) for n in encoder_inputs(config, name)]


def default_encoders(config: ModelConfig) -> tuple[str, ...]:
    """Every encoder the model has trained: all with backups (stage 2), the image ones otherwise."""
    return tuple(n for n in ENCODERS if config.backup or n not in TEXT_ENCODERS)


def check_encoders(config: ModelConfig, names: Sequence[str], source: str) -> None:
    """ValueError for an unknown encoder, or a text one of a stage-1 model (as
    `eval.runner.require_trained_text` refuses its text queries)."""
    unknown = [n for n in names if n not in ENCODERS]
    if unknown:
        raise ValueError(f"unknown encoder(s) {unknown}; expected some of {list(ENCODERS)}")
    text = [n for n in names if n in TEXT_ENCODERS]
    if text and not config.backup:
        raise ValueError(f"{source} is a stage-1 model (its model.json has backup=false: its text tower was never "
                         f"trained), so it cannot export the {'/'.join(text)} encoder(s); export gallery,ir")


def encoder_outputs(model: TVILFM, variables: Any, name: str, *inputs: jax.Array) -> tuple[jax.Array, ...]:
    """Encoder `name` in JAX, as evaluation runs it: outputs in `ENCODERS[name].outputs` order."""
    encoder = ENCODERS[name]
    out = encoder.fn(model, variables, *inputs)
    values, seen = [], set()
    for key in encoder.outputs:
        # Without backups "ir" is "current" / "ir_current" itself; two ONNX outputs need two values.
        values.append(jnp.array(out[key], copy=True) if id(out[key]) in seen else out[key])
        seen.add(id(out[key]))
    return tuple(values)


def encoder_fn(model: TVILFM, variables: Any, name: str) -> Callable[..., tuple[jax.Array, ...]]:
    """fn(*inputs) -> `encoder_outputs`, the variables closed over, for jax2onnx to trace."""

    def fn(*inputs):
        with _string_padding_max_pool():
            return encoder_outputs(model, variables, name, *inputs)

    return fn


@contextlib.contextmanager
def _string_padding_max_pool():
    """`flax.linen.max_pool` with explicit padding pairs turned into a -inf pad + "VALID", the
    form jax2onnx's patched max_pool accepts (see the module docstring). Entered inside the
    traced function, so it wraps jax2onnx's patch; outside jax2onnx it wraps flax's own."""
    inner = flax.linen.max_pool

    def max_pool(x, window_shape, strides=None, padding="VALID"):
        if not isinstance(padding, str):
            pads = ((0, 0), *(tuple(p) for p in padding), (0, 0))  # NHWC: batch and channels unpadded
            x = jnp.pad(x, pads, constant_values=-jnp.inf)
            padding = "VALID"
        return inner(x, window_shape=tuple(window_shape), strides=strides, padding=padding)

    flax.linen.max_pool = max_pool
    try:
        yield
    finally:
        flax.linen.max_pool = inner


def export_encoder(model: TVILFM, variables: Any, name: str, path: str | os.PathLike,
                   image_size: tuple[int, int], batch: int | str = DYNAMIC) -> None:
    """Writes encoder `name` of `model` (float32) with `variables` as an ONNX file at `path`."""
    dim = jax.export.symbolic_shape(DYNAMIC)[0] if batch == DYNAMIC else batch
    specs = input_specs(model.config, name, image_size, dim)
    args = [jax.ShapeDtypeStruct(shape, dtype) for _, shape, dtype in specs]
    # "web": one self-contained file with the initializers inside (a ResNet-50 + CLIP model is far
    # below protobuf's 2 GB); "standard" would spill large ones into a .onnx.data file beside it.
    _jax2onnx().to_onnx(encoder_fn(model, variables, name), args, model_name=f"tvilfm_{name}", opset=OPSET,
                        input_names=[n for n, _, _ in specs], output_names=list(ENCODERS[name].outputs),
                        return_mode="file", output_path=os.fspath(path), export_mode="web")


def check_inputs(config: ModelConfig, name: str, image_size: tuple[int, int], rows: int,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of `rows` rows for encoder `name`: uniform random uint8 images, tokenised captions."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, (input_name, shape, dtype) in enumerate(input_specs(config, name, image_size, rows)):
        if dtype == np.uint8:
            out[input_name] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:  # a different caption per row and per caption input
            captions = [_CHECK_CAPTIONS[(r + i) % len(_CHECK_CAPTIONS)] for r in range(rows)]
            out[input_name] = tokenize(captions, config.text.context_length)
    return out


def session(path: str | os.PathLike):
    """An onnxruntime CPU `InferenceSession` of an exported graph (warnings off: it notes the
    symbolic batch's shape merges)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def compare(model: TVILFM, variables: Any, name: str, path: str | os.PathLike,
            inputs: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """{output: {"max_abs", "max_rel"}} of onnxruntime's outputs for `inputs` against the jitted
    JAX encoder (`encoder_outputs`, the model's own max-pool); max_rel = max_abs / max |JAX output|."""
    got = session(path).run(list(ENCODERS[name].outputs), dict(inputs))
    names = encoder_inputs(model.config, name)
    want = jax.jit(lambda *a: encoder_outputs(model, variables, name, *a))(*(inputs[n] for n in names))
    out = {}
    for key, g, w in zip(ENCODERS[name].outputs, got, want):
        w = np.asarray(w)
        if g.shape != w.shape or g.dtype != w.dtype:
            raise ValueError(f"{name}.{key}: onnxruntime gave {g.dtype} {g.shape}, JAX {w.dtype} {w.shape}")
        err = float(np.max(np.abs(g - w)))
        out[key] = {"max_abs": err, "max_rel": err / max(float(np.max(np.abs(w))), np.finfo(np.float32).tiny)}
    return out


def _manifest(config: ModelConfig, image_size: tuple[int, int], batch: int | str, source: str) -> dict:
    """The manifest's model-wide part: what was exported, how, and the input contract."""
    return {
        "model": source, "model_config": config.to_dict(), "image_size": list(image_size), "batch": batch,
        "opset": OPSET, "jax2onnx": version("jax2onnx"), "onnxruntime": version("onnxruntime"),
        "tolerance": {"max_abs": TOLERANCE},
        "preprocessing": {
            "images": f"uint8 NHWC RGB [N, {image_size[0]}, {image_size[1]}, 3], resized by the caller (Lanczos "
                      "in evaluation); the graph divides by 255 and applies ImageNet mean/std",
            "ids": f"int32 [N, {config.text.context_length}] from tvilfm_jax.data.tokenizer.tokenize (CLIP BPE)",
            "outputs": "float32 [N, D], L2-normalised rows except mer (fusion + ir_current + text)",
        },
        "encoders": {},
    }


def _entry(config: ModelConfig, name: str, image_size: tuple[int, int], batch: int | str, check: dict) -> dict:
    """The manifest's entry of encoder `name`: file, inputs, outputs and the check's result."""
    return {
        "file": f"{name}.onnx", "doc": ENCODERS[name].doc,
        "inputs": [{"name": n, "dtype": d.name, "shape": list(s)}
                   for n, s, d in input_specs(config, name, image_size, batch)],
        "outputs": [{"name": k, "dtype": "float32", "shape": [batch, config.embed_dim]}
                    for k in ENCODERS[name].outputs],
        "check": check,
    }


def export(config: ModelConfig, variables: Any, output: str | os.PathLike, encoders: Sequence[str],
           image_size: tuple[int, int], batch: int | str = DYNAMIC, check_rows: int = 3,
           source: str = "the model", print_fn: Callable[[str], None] | None = print) -> dict:
    """Exports `encoders` of a model (config + variables) into `output` as <encoder>.onnx plus
    `MANIFEST` (inputs, outputs, preprocessing, versions and the onnxruntime check), and returns
    the manifest.

    Each graph is run in onnxruntime on `check_inputs` (`check_rows` rows, or the fixed batch)
    and compared with JAX; an output off by more than `TOLERANCE` raises ValueError (naming the
    encoder, output and error) after the manifest is written.
    """
    check_encoders(config, encoders, source)
    # Evaluation embeds in float32 whatever the training compute dtype (`eval.runner.with_dtype`).
    model = TVILFM(dataclasses.replace(config, dtype="float32"))
    os.makedirs(output, exist_ok=True)
    rows = batch if batch != DYNAMIC else check_rows
    manifest, failures = _manifest(config, image_size, batch, source), []
    for name in encoders:
        path = os.path.join(output, f"{name}.onnx")
        export_encoder(model, variables, name, path, image_size, batch)
        errors = compare(model, variables, name, path, check_inputs(config, name, image_size, rows))
        failures += [f"{name}.{k}: max abs error {e['max_abs']:.3g} > {TOLERANCE:g}" for k, e in errors.items()
                     if not e["max_abs"] <= TOLERANCE]
        manifest["encoders"][name] = _entry(config, name, image_size, batch, {"rows": rows, "errors": errors})
        if print_fn is not None:
            worst = max(e["max_abs"] for e in errors.values())
            print_fn(f"{path}: onnxruntime vs JAX max abs error {worst:.3g} over {rows} rows")
    with open(os.path.join(output, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2)
    if failures:
        raise ValueError(f"onnxruntime disagrees with JAX beyond the tolerance: {'; '.join(failures)}")
    return manifest
