r"""`python -m tvilfm_jax.extract --model DIR --images DIR --modality rgb|ir --output DIR`.

Embeds a folder (or `--file_list`) of RGB or IR images with an exported model (model.json +
variables/, e.g. a run's models/last) and writes a features directory
(`tvilfm_jax.retrieval.store`: meta.json, index.jsonl, one float32 .npy per kind) that
`python -m tvilfm_jax.search` reads:

  rgb  the gallery embeddings of every query modality ("current", "ir": `TVILFM.gallery_heads`)
  ir   pre-neck IR features, and with --captions (a JSON {path: caption}; without --file_list
       the images it names) the captions' features: the IR image's own caption that Fusion
       subtracts

Numbers are the evaluator's for the same images: the same image reading (PIL, Lanczos to
288x144, then to --image_size), `FeatureExtractor` (jitted batches) and heads, in --dtype.
--image_size, --batch_size and --dtype default to the run's eval settings when --model is a
run's models/<which> (its config.json), else to the evaluation defaults. pid / cam of each image
come from --layout (sysu, regdb, llcm folder layouts) or --pid_regex (named groups pid, cam).

Resumable: rows are written --shard_size at a time; rerunning the same command continues a
killed extract, and reports a finished one. Another model, other settings or other images in an
existing --output are refused.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import jax
from absl import flags
from tqdm.auto import tqdm

from tvilfm_jax import cli, run_layout
from tvilfm_jax.data.images import ImageReadError, check_size
from tvilfm_jax.eval.settings import EvalSettings, settings_from_config

MODALITIES = ("rgb", "ir")
DEFAULT_SHARD_SIZE = 4096


def parse_args(argv: Sequence[str]) -> flags.FlagValues:
    """The flags of `argv` (the arguments after the program name), on a fresh FlagValues."""
    fv = flags.FlagValues()
    flags.DEFINE_string("model", None, "model directory (model.json + variables/), e.g. a run's models/last",
                        flag_values=fv, required=True)
    flags.DEFINE_string("images", None, "image folder (walked recursively; the root of --file_list paths)",
                        flag_values=fv, required=True)
    flags.DEFINE_enum("modality", None, MODALITIES, "rgb: a gallery; ir: queries", flag_values=fv, required=True)
    flags.DEFINE_string("output", None, "features directory to write (or to resume)", flag_values=fv, required=True)
    flags.DEFINE_string("file_list", None, "text file of image paths relative to --images, one a line "
                        "(default: every image under --images, sorted)", flag_values=fv)
    flags.DEFINE_string("captions", None, 'JSON {path: caption} or {path: {"description": caption}}, one for '
                        "every image (IR: the images' own captions, for Fusion); without --file_list the images "
                        "are the ones it names", flag_values=fv)
    flags.DEFINE_string("layout", None, "read pid / cam from the paths as this dataset layout stores them "
                        "(sysu, regdb, llcm)", flag_values=fv)
    flags.DEFINE_string("pid_regex", None, "read pid (and cam) from the paths with this regex's named groups "
                        "(?P<pid>...) (?P<cam>...), searched in each relative path", flag_values=fv)
    flags.DEFINE_list("image_size", None, "H,W fed to the network (default: the run's, else 288,144)",
                      flag_values=fv)
    flags.DEFINE_integer("batch_size", None, "images per jitted call (default: the run's eval.batch_size, else 128)",
                         flag_values=fv)
    flags.DEFINE_string("dtype", None, "compute dtype while embedding (default: the run's eval.dtype, else float32)",
                        flag_values=fv)
    flags.DEFINE_bool("flip", False, "average each image's features with its mirror image's (flip TTA)",
                      flag_values=fv)
    flags.DEFINE_integer("shard_size", DEFAULT_SHARD_SIZE, "rows per shard (what a resumed extract redoes at most)",
                         flag_values=fv)
    flags.DEFINE_bool("progress", True, "show a progress bar", flag_values=fv)
    cli.parse(["tvilfm_jax.extract", *argv], fv, __doc__)
    if fv.shard_size < 1:
        cli.fail(f"--shard_size must be positive, got {fv.shard_size}")
    return fv


def run_settings(model_dir: str) -> EvalSettings:
    """The eval settings of the run a `<workdir>/models/<which>` export belongs to, else the defaults."""
    parent = os.path.dirname(os.path.abspath(model_dir))
    config_file = os.path.join(os.path.dirname(parent), run_layout.CONFIG_FILE)
    if os.path.basename(parent) != run_layout.MODELS_DIR or not os.path.isfile(config_file):
        return EvalSettings()
    with open(config_file) as f:
        return settings_from_config(json.load(f))


def settings(args: flags.FlagValues) -> EvalSettings:
    """The run's (or default) eval settings with the flags' overrides."""
    base = run_settings(args.model)
    changes = {k: getattr(args, k) for k in ("batch_size", "dtype") if getattr(args, k) is not None}
    if args.image_size is not None:
        try:
            changes["image_size"] = check_size(tuple(int(v) for v in args.image_size), "--image_size")
        except ValueError:
            raise ValueError(f"--image_size must be H,W ints >= 16, got {','.join(args.image_size)}") from None
    return base.replace(**changes)


def main(argv: Sequence[str]) -> str:
    """Extracts as `argv` (the arguments after the program name) asks; returns the features directory."""
    args = parse_args(argv)
    from tvilfm_jax.eval.features import FeatureExtractor
    from tvilfm_jax.eval.runner import load_model, with_dtype
    from tvilfm_jax.eval.testset import FileImages
    from tvilfm_jax.models.tvilfm import TVILFM
    from tvilfm_jax.retrieval import embedding, inputs, store

    try:
        chosen = settings(args)
        pattern = inputs.path_pattern(args.layout, args.pid_regex)
        entries = inputs.list_entries(args.images, file_list=args.file_list, pattern=pattern,
                                      captions_file=args.captions)
        config, variables, model_path = load_model(args.model)
        with_captions = args.modality == "ir" and args.captions is not None
        meta = {
            "format": store.FORMAT, "count": len(entries), "root": os.path.abspath(args.images),
            "modality": args.modality, "pid_pattern": None if pattern is None else pattern.pattern,
            "kinds": embedding.kinds(config, args.modality, with_captions),
            "shard_size": args.shard_size,
            "settings": {"image_size": list(chosen.image_size), "dtype": chosen.dtype, "flip": args.flip},
            "model": {"path": model_path, "fingerprint": store.model_fingerprint(config, variables),
                      "config": config.to_dict()},
        }
        if store.prepare(args.output, meta, entries):
            print(f"{args.output} is already complete: {len(entries)} {args.modality} images")
            return args.output
    except (OSError, ValueError) as err:
        cli.fail(err)

    model = with_dtype(TVILFM(config), chosen.dtype)
    extractor = FeatureExtractor(model, chosen.batch_size, chosen.image_size, progress=False)
    variables = jax.device_put(variables)
    pending = store.pending_shards(args.output, len(entries), args.shard_size)
    done = len(entries) - sum(min(args.shard_size, len(entries) - s) for s in pending)
    bar = tqdm(total=len(entries), initial=done, desc=f"{args.modality} images", unit="img",
               disable=not args.progress)
    for start in pending:
        stop = min(start + args.shard_size, len(entries))
        captions = [e.caption for e in entries[start:stop]] if with_captions else None
        try:
            images = FileImages(args.images, [e.path for e in entries[start:stop]])
            arrays = embedding.embed_images(extractor, variables, images, args.modality, args.flip, captions)
        except ImageReadError as err:  # names the file; the shards written so far stay
            cli.fail(f"{err} (replace it and rerun to resume, or leave it out with --file_list into a new --output)")
        store.write_shard(args.output, start, arrays)
        bar.update(stop - start)
    bar.close()
    store.finalize(args.output)
    resumed = f", resumed after {done}" if done else ""
    print(f"wrote {args.output}: {len(entries)} {args.modality} images{resumed}, kinds "
          f"{', '.join(meta['kinds'])} (D = {config.embed_dim}), model {model_path}")
    return args.output


if __name__ == "__main__":
    main(sys.argv[1:])
