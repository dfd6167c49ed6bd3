"""python -m tvilfm_jax.generators COMMAND --root DIR --layout LAYOUT [flags]  (the logic: ``stages``).

Commands:
  caption    BLIP captions of every image the layout needs (needs --rgb_model, --ir_model)
  rephrase   LLM rephrases of the training captions (needs --llm_model)
  filter     remove colours from the IR rephrases; or from one JSON file: --input and --output
             instead of --root/--layout
  all        caption -> rephrase -> filter

A flag the command does not use is refused. Every command resumes where a stopped run left off.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import flags

from tvilfm_jax import cli
from tvilfm_jax.data.datasets import LAYOUTS
from tvilfm_jax.generators import stages
from tvilfm_jax.generators.settings import CHAT_FORMATS, MAX_LENGTH, PROMPT_TEMPLATE, SamplingSettings

DATASET_FLAGS = ("root", "layout", "text_dir", "state_dir", "key_prefix")
RUN_FLAGS = ("device", "dtype", "max_items", "flush_every", "progress")
CAPTION_FLAGS = ("rgb_model", "ir_model", "rgb_processor", "ir_processor", "caption_batch_size", "max_length")
REPHRASE_FLAGS = ("llm_model", "rephrase_batch_size", "seed", "temperature", "repetition_penalty",
                  "max_new_tokens", "prompt_template", "chat_format")
# command: (the flags it uses, the ones it needs)
COMMANDS = {
    "caption": (DATASET_FLAGS + RUN_FLAGS + CAPTION_FLAGS, ("root", "layout", "rgb_model", "ir_model")),
    "rephrase": (DATASET_FLAGS + RUN_FLAGS + REPHRASE_FLAGS, ("root", "layout", "llm_model")),
    "filter": (DATASET_FLAGS + ("input", "output"), ()),
    "all": (DATASET_FLAGS + RUN_FLAGS + CAPTION_FLAGS + REPHRASE_FLAGS,
            ("root", "layout", "rgb_model", "ir_model", "llm_model")),
}


def define_flags(fv: flags.FlagValues) -> None:
    """Every command's flags, on `fv`; the defaults are the paper's (`settings`) and `stages.RunOptions`'."""
    options, sampling = stages.RunOptions(), SamplingSettings()
    # dataset
    flags.DEFINE_string("root", None, "dataset root (the folder holding cam*/, Visible/ or vis/)", flag_values=fv)
    flags.DEFINE_enum("layout", None, LAYOUTS, "the dataset's layout", flag_values=fv)
    flags.DEFINE_string("text_dir", None, "where the Text/ files go (default <root>/Text)", flag_values=fv)
    flags.DEFINE_string("state_dir", None, "progress files for resuming (default <text_dir>/.generator_state)",
                        flag_values=fv)
    flags.DEFINE_string("key_prefix", None, "prefix of the JSON keys (default datasets/<layout>/, as released)",
                        flag_values=fv)
    # running the models
    flags.DEFINE_string("device", options.device, "auto, cpu, cuda, cuda:1, ...", flag_values=fv)
    flags.DEFINE_string("dtype", options.dtype, "auto (float16 on CUDA, float32 on CPU), float32, float16, bfloat16",
                        flag_values=fv)
    flags.DEFINE_integer("max_items", None, "stop each modality after the batch that reaches this many new items",
                         flag_values=fv)
    flags.DEFINE_integer("flush_every", options.flush_every, "write progress every N items (and every minute)",
                         flag_values=fv)
    flags.DEFINE_bool("progress", options.progress, "show progress bars", flag_values=fv)
    # caption
    flags.DEFINE_string("rgb_model", None, "local BLIP checkpoint for RGB images", flag_values=fv)
    flags.DEFINE_string("ir_model", None, "local BLIP checkpoint for IR images", flag_values=fv)
    flags.DEFINE_string("rgb_processor", None, "BLIP processor directory if --rgb_model has none", flag_values=fv)
    flags.DEFINE_string("ir_processor", None, "BLIP processor directory if --ir_model has none", flag_values=fv)
    flags.DEFINE_integer("caption_batch_size", 16, "images per BLIP batch", flag_values=fv)
    flags.DEFINE_integer("max_length", MAX_LENGTH, "generate(max_length=...) as the original", flag_values=fv)
    # rephrase
    flags.DEFINE_string("llm_model", None, "local causal LM checkpoint (e.g. Vicuna-7B v1.5)", flag_values=fv)
    flags.DEFINE_integer("rephrase_batch_size", 8, "captions per LLM batch", flag_values=fv)
    flags.DEFINE_integer("seed", sampling.seed, "sampling seed", flag_values=fv)
    flags.DEFINE_float("temperature", sampling.temperature, "sampling temperature (0: greedy)", flag_values=fv)
    flags.DEFINE_float("repetition_penalty", sampling.repetition_penalty, "generate(repetition_penalty=...)",
                       flag_values=fv)
    flags.DEFINE_integer("max_new_tokens", sampling.max_new_tokens, "generate(max_new_tokens=...)", flag_values=fv)
    flags.DEFINE_string("prompt_template", PROMPT_TEMPLATE, "'{caption}' marks where the caption goes",
                        flag_values=fv)
    flags.DEFINE_enum("chat_format", "auto", CHAT_FORMATS,
                      "auto: the tokenizer's chat template if any, else raw; vicuna: FastChat's Vicuna text",
                      flag_values=fv)
    # filter
    flags.DEFINE_string("input", None, "filter: this JSON file instead of a dataset ...", flag_values=fv)
    flags.DEFINE_string("output", None, "filter: ... and write the result here", flag_values=fv)


def parse_args(argv: Sequence[str]) -> tuple[str, flags.FlagValues]:
    """(command, flags) of `argv` (the arguments after the program name), on a fresh FlagValues;
    a missing command, a flag the command does not use or a missing one it needs fails with one line."""
    fv = flags.FlagValues()
    define_flags(fv)
    args = cli.parse(["tvilfm_jax.generators", *argv], fv, __doc__, max_positional=1)
    if len(args) < 2 or args[1] not in COMMANDS:
        cli.fail(f"expected a command, one of {', '.join(COMMANDS)}; got {args[1:] or 'none'}")
    command = args[1]
    uses, needs = COMMANDS[command]
    unused = [f"--{name}" for name in fv if fv[name].present and name not in uses]
    if unused:
        cli.fail(f"{command} does not use {', '.join(unused)}")
    missing = [f"--{name}" for name in needs if fv[name].value is None]
    if command == "filter":
        if fv.input or fv.output:
            if not (fv.input and fv.output) or fv.root or fv.layout:
                cli.fail("filter: give --input and --output together, without --root/--layout")
        elif not (fv.root and fv.layout):
            cli.fail("filter: give --root and --layout (or --input and --output)")
    elif missing:
        cli.fail(f"{command} needs {', '.join(missing)}")
    return command, fv


def main(argv: Sequence[str]) -> int:
    """Runs the command `argv` (the arguments after the program name) names; returns the exit
    status. Bad flags end with `cli.fail`; a model, image or Text/ file the stages cannot use raises
    their OSError / ValueError naming it (one line under `python -m`)."""
    command, fv = parse_args(argv)
    if command == "filter" and fv.input:
        from tvilfm_jax.generators.filter_files import filter_json_file

        changed = filter_json_file(fv.input, fv.output)
        print(f"{fv.output}: written, {changed} texts changed")
        return 0

    ds = stages.Dataset(fv.root, fv.layout, fv.text_dir, fv.state_dir, fv.key_prefix)
    reports = []
    if command in ("caption", "all"):
        options = stages.RunOptions(fv.device, fv.dtype, fv.caption_batch_size, fv.max_items, fv.flush_every,
                                    fv.progress)
        reports.append(("caption", stages.caption_dataset(
            ds, {"RGB": fv.rgb_model, "IR": fv.ir_model},
            {"RGB": fv.rgb_processor, "IR": fv.ir_processor}, options, fv.max_length)))
        if not reports[-1][1].complete:
            return _summarise(reports, incomplete=True)
    if command in ("rephrase", "all"):
        options = stages.RunOptions(fv.device, fv.dtype, fv.rephrase_batch_size, fv.max_items, fv.flush_every,
                                    fv.progress)
        settings = SamplingSettings(fv.temperature, fv.repetition_penalty, fv.max_new_tokens, fv.seed)
        reports.append(("rephrase", stages.rephrase_dataset(
            ds, fv.llm_model, options, settings, fv.prompt_template, fv.chat_format)))
        if not reports[-1][1].complete:
            return _summarise(reports, incomplete=True)
    if command in ("filter", "all"):
        reports.append(("filter", stages.filter_dataset(ds)))
    return _summarise(reports)


def _summarise(reports, incomplete: bool = False) -> int:
    for name, report in reports:
        counts = ", ".join(f"{m} {report.done[m]}/{report.total[m]} (+{report.made[m]})" for m in report.total)
        print(f"{name}: {counts}")
        for path in report.written:
            print(f"  wrote {path}")
    if incomplete:
        print("stopped before the end (--max_items); rerun the same command to continue")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (OSError, ValueError) as err:  # bad input: its message, no traceback
        cli.fail(err)
