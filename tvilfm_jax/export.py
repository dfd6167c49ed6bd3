r"""Export a model artifact's evaluation encoders to ONNX, each checked in onnxruntime against JAX.

  python -m tvilfm_jax.export --model runs/sysu_tvilfm/models/best --output onnx/sysu \
      [--encoders gallery,ir,text,fusion] [--image_size 288,144] [--batch_size 0]

Writes one self-contained <encoder>.onnx per encoder and encoders.json (inputs, outputs,
preprocessing, versions, the onnxruntime check's errors).
Encoders: gallery (RGB image -> gallery embeddings), ir (IR image -> IR-only queries), text
(RGB caption tokens -> text query), fusion (IR image + RGB caption + IR caption -> every IR
query, MER included); the input contract is in `tvilfm_jax.onnx_export`. A stage-1 model
(backup=false in its model.json) exports the image encoders only: its text tower was never
trained. Needs the `export` extra and jax2onnx (`make install-export`, see README).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from absl import flags

from tvilfm_jax import artifacts, cli, onnx_export
from tvilfm_jax.data.images import IMAGE_SIZE, MIN_SIDE, check_size


def parse_args(argv: Sequence[str]) -> flags.FlagValues:
    """The flags of `argv` (the arguments after the program name), on a fresh FlagValues."""
    fv = flags.FlagValues()
    flags.DEFINE_string("model", None, "model directory (model.json + variables/)", flag_values=fv, required=True)
    flags.DEFINE_string("output", None, "directory for the .onnx files and encoders.json (default: <model>/onnx)",
                        flag_values=fv)
    flags.DEFINE_list("encoders", None, f"some of {','.join(onnx_export.ENCODERS)} (default: all that the model "
                      "trained: gallery,ir for a stage-1 model)", flag_values=fv)
    flags.DEFINE_list("image_size", [str(s) for s in IMAGE_SIZE], "H,W of the input images: the training "
                      "size (config.data.image_size)", flag_values=fv)
    flags.DEFINE_integer("batch_size", 0, "rows per call fixed in the graphs; 0: a symbolic batch dimension 'N'",
                         lower_bound=0, flag_values=fv)
    cli.parse(["tvilfm_jax.export", *argv], fv, __doc__)
    return fv


def main(argv: Sequence[str]) -> dict:
    """Exports as `argv` (the arguments after the program name) asks; returns the manifest."""
    args = parse_args(argv)
    try:
        image_size = check_size(tuple(int(s) for s in args.image_size), "--image_size")
    except ValueError:
        cli.fail(f"--image_size must be H,W (two ints >= {MIN_SIDE}), got {','.join(args.image_size)}")
    try:
        config, variables = artifacts.load_model(args.model)
        source = os.path.abspath(args.model)
        encoders = tuple(args.encoders) if args.encoders else onnx_export.default_encoders(config)
        output = args.output or os.path.join(args.model, "onnx")
        batch = args.batch_size or onnx_export.DYNAMIC
        manifest = onnx_export.export(config, variables, output, encoders, image_size, batch, source=source)
    except ImportError as err:
        cli.fail(f"{err}: install the export tools with `make install-export` (README, \"Export to ONNX\")")
    except (OSError, ValueError) as err:
        cli.fail(err)
    print(f"wrote {', '.join(f'{e}.onnx' for e in encoders)} and {onnx_export.MANIFEST} to {output}")
    return manifest


if __name__ == "__main__":
    main(sys.argv[1:])
