r"""Convert PyTorch weights into a model checkpoint (config.json + orbax variables/): the start of
a training run (`--config.init.checkpoint`) or a model to score (`tvilfm_jax.evaluate --checkpoint`).

  python -m tvilfm_jax.convert --kind torchvision --input resnet50-0676ba61.pth --clip RN50.pt \
      --num_classes 395 --output ckpt/sysu_init
  python -m tvilfm_jax.convert --kind official --input VI_sysu_BASE.pth --num_classes 395 \
      --backup copy --output ckpt/sysu_stage2_init

Kinds: `torchvision` (ImageNet ResNet-50 into both stems + body; text from --clip if given),
`clip` (OpenAI CLIP text tower only), `official` (a released TVI-LFM checkpoint, all parts).
Parts a kind does not provide are freshly initialised from --seed; the result is checked key by
key against the model --num_classes and --model_json build. The key mappings live in
`tvilfm_jax.conversion`; this module assembles their parts and wires the flags. Needs torch (the
`convert` extra).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence

import jax
from absl import flags

from tvilfm_jax import checkpoints, cli
from tvilfm_jax.conversion.clip_text import convert_openai_clip
from tvilfm_jax.conversion.common import load_torch_checkpoint
from tvilfm_jax.conversion.official import convert_official, has_backup
from tvilfm_jax.conversion.resnet import convert_torchvision_resnet
from tvilfm_jax.models.tvilfm import ModelConfig, add_backup, init_variables

KINDS = ("torchvision", "clip", "official")
BACKUP_CHOICES = ("auto", "none", "checkpoint", "copy")


def parse_args(argv: Sequence[str]) -> flags.FlagValues:
    """The flags of `argv` (the arguments after the program name), on a fresh FlagValues."""
    fv = flags.FlagValues()
    flags.DEFINE_enum("kind", None, KINDS, "what --input holds", flag_values=fv, required=True)
    flags.DEFINE_string("input", None, "PyTorch checkpoint of the given kind", flag_values=fv, required=True)
    flags.DEFINE_string("clip", None, "OpenAI CLIP checkpoint (RN50.pt) for the text tower (kind torchvision)",
                        flag_values=fv)
    flags.DEFINE_integer("num_classes", None, "training identities C", flag_values=fv, required=True)
    flags.DEFINE_string("output", None, "checkpoint directory to write", flag_values=fv, required=True)
    flags.DEFINE_string("model_json", "{}", 'ModelConfig fields as JSON, e.g. \'{"fusion": "add", "text": '
                        '{"layers": 12}}\'', flag_values=fv)
    flags.DEFINE_enum("backup", "auto", BACKUP_CHOICES,
                      "backup_gem/backup_neck: from the checkpoint (official stage-2), copied from gem/neck "
                      "(stage-2 start from a stage-1 checkpoint), none, or auto = checkpoint if it has them "
                      "else none", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "initialises the parts the input does not provide", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "replace an existing checkpoint at --output", flag_values=fv)
    cli.parse(["tvilfm_jax.convert", *argv], fv, __doc__)
    if fv.clip and fv.kind != "torchvision":
        cli.fail("--clip only goes with --kind torchvision (use --kind clip --input RN50.pt otherwise)")
    return fv


def build_config(args: flags.FlagValues, official_has_backup: bool) -> ModelConfig:
    try:
        fields = json.loads(args.model_json)
    except json.JSONDecodeError as err:
        cli.fail(f"--model_json: not valid JSON ({err})")
    if not isinstance(fields, dict):
        cli.fail("--model_json: expected a JSON object of ModelConfig fields")
    if "backup" in fields:
        cli.fail("--model_json: set backups with --backup, not the 'backup' field")
    backup = {"none": False, "checkpoint": True, "copy": True, "auto": official_has_backup}[args.backup]
    return ModelConfig.from_dict({**fields, "num_classes": args.num_classes, "backup": backup}, "--model_json")


def convert(args: flags.FlagValues) -> tuple[ModelConfig, dict]:
    """Builds (config, variables) as the flags ask."""
    tensors = load_torch_checkpoint(args.input)
    stored_backup = args.kind == "official" and has_backup(tensors)
    if args.backup == "checkpoint" and not stored_backup:
        cli.fail(f"--backup checkpoint: {args.input} has no backup_pool/backup_classifier keys")
    config = build_config(args, official_has_backup=stored_backup and args.backup != "copy")
    # With --backup copy the input has no backups: convert without, then copy gem/neck.
    source_config = dataclasses.replace(config, backup=False) if args.backup == "copy" else config

    if args.kind == "official":
        variables = convert_official(tensors, source_config)
    else:
        key = jax.random.key(args.seed)
        if args.kind == "torchvision":
            variables = init_variables(source_config, key, include_visual=False)
            visual = convert_torchvision_resnet(tensors, config.resnet_blocks, config.resnet_width)
            for collection in ("params", "batch_stats"):
                variables[collection]["visual"] = visual[collection]
            if args.clip:
                variables["params"]["text"] = convert_openai_clip(args.clip, config.text)
        else:
            variables = init_variables(source_config, key)
            variables["params"]["text"] = convert_openai_clip(tensors, config.text)
    if args.backup == "copy":
        variables = add_backup(variables)
    # Converted parts must fit the model the config builds; this names any key that does not.
    expected = jax.eval_shape(lambda: init_variables(config, jax.random.key(0)))
    checkpoints.check_tree(checkpoints.tree_shapes(variables), checkpoints.tree_shapes(expected), args.input)
    return config, variables


def main(argv: Sequence[str]) -> str:
    """Converts as `argv` (the arguments after the program name) asks; returns the written path."""
    args = parse_args(argv)
    existing = os.path.abspath(os.path.join(args.output, checkpoints.VARIABLES_DIR))
    if os.path.exists(existing) and not args.overwrite:
        cli.fail(f"{existing} already exists; pass --overwrite to replace it")
    try:
        config, variables = convert(args)
        path = checkpoints.save_variables(args.output, variables, config, overwrite=args.overwrite)
    except (OSError, ValueError) as err:  # ConversionError is a ValueError; report, no traceback
        cli.fail(err)
    count = sum(x.size for x in jax.tree_util.tree_leaves(variables["params"]))
    print(f"wrote {path}: {args.kind} weights from {args.input}, {count:,} parameters, config {config.to_json()}")
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
