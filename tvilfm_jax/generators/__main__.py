"""python -m tvilfm_jax.generators caption|rephrase|filter|all  (see ``stages`` for the logic)."""

from __future__ import annotations

import argparse
import sys

from tvilfm_jax.data.datasets import LAYOUTS
from tvilfm_jax.generators.settings import (
    CHAT_FORMATS,
    MAX_LENGTH,
    PROMPT_TEMPLATE,
    SamplingSettings,
)


def _dataset_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--root", required=required, help="dataset root (the folder holding cam*/, Visible/ or vis/)")
    p.add_argument("--layout", required=required, choices=LAYOUTS)
    p.add_argument("--text-dir", help="where the Text/ files go (default <root>/Text)")
    p.add_argument("--state-dir", help="progress files for resuming (default <text-dir>/.generator_state)")
    p.add_argument("--key-prefix", help="prefix of the JSON keys (default datasets/<layout>/, as released)")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", help="auto (float16 on CUDA, float32 on CPU), float32, float16, bfloat16")
    p.add_argument("--max-items", type=int, help="stop each modality after the batch that reaches this many new items")
    p.add_argument("--flush-every", type=int, default=256, help="write progress every N items (and every minute)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _caption_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rgb-model", required=True, help="local BLIP checkpoint for RGB images")
    p.add_argument("--ir-model", required=True, help="local BLIP checkpoint for IR images")
    p.add_argument("--rgb-processor", help="BLIP processor directory if --rgb-model has none")
    p.add_argument("--ir-processor", help="BLIP processor directory if --ir-model has none")
    p.add_argument("--caption-batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=MAX_LENGTH, help="generate(max_length=...) as the original")


def _rephrase_args(p: argparse.ArgumentParser) -> None:
    d = SamplingSettings()
    p.add_argument("--llm-model", required=True, help="local causal LM checkpoint (e.g. Vicuna-7B v1.5)")
    p.add_argument("--rephrase-batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--temperature", type=float, default=d.temperature, help="0 = greedy")
    p.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty)
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--prompt-template", default=PROMPT_TEMPLATE, help="'{caption}' marks where the caption goes")
    p.add_argument("--chat-format", default="auto", choices=CHAT_FORMATS,
                   help="auto: the tokenizer's chat template if any, else raw; vicuna: FastChat's Vicuna text")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tvilfm_jax.generators", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("caption", help="BLIP captions of every image the layout needs")
    for add in (_dataset_args, _run_args, _caption_args):
        add(p)
    p = sub.add_parser("rephrase", help="LLM rephrases of the training captions")
    for add in (_dataset_args, _run_args, _rephrase_args):
        add(p)
    p = sub.add_parser("filter", help="remove colours from the IR rephrases (or from --input)")
    _dataset_args(p, required=False)
    p.add_argument("--input", help="filter this JSON file instead of a dataset ...")
    p.add_argument("--output", help="... and write the result here")
    p = sub.add_parser("all", help="caption -> rephrase -> filter")
    for add in (_dataset_args, _run_args, _caption_args, _rephrase_args):
        add(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from tvilfm_jax.generators import stages  # torch only loads with the model stages

    if args.command == "filter" and (args.input or args.output):
        if not (args.input and args.output) or args.root:
            parser.error("filter: give --input and --output together, without --root/--layout")
        from tvilfm_jax.generators.filter_files import filter_json_file

        changed = filter_json_file(args.input, args.output)
        print(f"{args.output}: written, {changed} texts changed")
        return 0
    if args.command == "filter" and not (args.root and args.layout):
        parser.error("filter: give --root and --layout (or --input and --output)")

    ds = stages.Dataset(args.root, args.layout, args.text_dir, args.state_dir, args.key_prefix)
    reports = []
    if args.command in ("caption", "all"):
        options = stages.RunOptions(args.device, args.dtype, args.caption_batch_size, args.max_items,
                                    args.flush_every, not args.no_progress)
        reports.append(("caption", stages.caption_dataset(
            ds, {"RGB": args.rgb_model, "IR": args.ir_model},
            {"RGB": args.rgb_processor, "IR": args.ir_processor}, options, args.max_length)))
        if not reports[-1][1].complete:
            return _summarise(reports, incomplete=True)
    if args.command in ("rephrase", "all"):
        options = stages.RunOptions(args.device, args.dtype, args.rephrase_batch_size, args.max_items,
                                    args.flush_every, not args.no_progress)
        settings = SamplingSettings(args.temperature, args.repetition_penalty, args.max_new_tokens, args.seed)
        reports.append(("rephrase", stages.rephrase_dataset(
            ds, args.llm_model, options, settings, args.prompt_template, args.chat_format)))
        if not reports[-1][1].complete:
            return _summarise(reports, incomplete=True)
    if args.command in ("filter", "all"):
        reports.append(("filter", stages.filter_dataset(ds)))
    return _summarise(reports)


def _summarise(reports, incomplete: bool = False) -> int:
    for name, report in reports:
        counts = ", ".join(f"{m} {report.done[m]}/{report.total[m]} (+{report.made[m]})" for m in report.total)
        print(f"{name}: {counts}")
        for path in report.written:
            print(f"  wrote {path}")
    if incomplete:
        print("stopped before the end (--max-items); rerun the same command to continue")
    return 0


if __name__ == "__main__":
    sys.exit(main())
