r"""`python -m tvilfm_jax.search --gallery FEATURES [--query_image IR.jpg] [--text "..."] [--ir_caption "..."]`.

Ranks the RGB gallery of a features directory (`python -m tvilfm_jax.extract --modality rgb`)
for one query, in each query modality of evaluation (`tvilfm_jax.retrieval.embedding`):

  ir      the IR image alone                                   (--query_image)
  text    the description alone                                (--text)
  fusion  IR image + description - the IR image's own caption  (--query_image --text [--ir_caption])
  mer     fusion + ir + text scores                            (the same)

The IR query is an image file (--query_image), or a row of an IR features directory
(--queries DIR --query_path PATH: its stored features, and its stored caption as the IR caption).

--modalities defaults to what the query allows (an image: ir; a description: text; both: all
four). Without --ir_caption, Fusion and MER use F = f_IR + T(text): nothing describes what the
IR image itself shows, so nothing is subtracted (said in the output). The query is embedded with
the gallery's model (--model, default the one meta.json names; another model is refused) and
settings (image size, dtype, flip). Prints the top-k of each modality and writes
<output>/ranking.json and <output>/ranking.png (green / red frames when the query's pid is
known: --query_pid, or read from the query image's path with the gallery's --layout /
--pid_regex; grey otherwise).

--index exact (default): every gallery row is scored (a matmul in chunks of the memory-mapped
gallery). --index faiss: an IVF-SQ8 faiss index (built on first use and kept in the gallery
directory as <kind>.faiss) proposes 4k candidates that exact scores re-rank; approximate:
recall@k against exact search is in BENCHMARKS.md.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence

from absl import flags

from tvilfm_jax import cli
from tvilfm_jax.eval.settings import MODALITIES

INDEXES = ("exact", "faiss")
RESULT_JSON = "ranking.json"
RESULT_PNG = "ranking.png"


def parse_args(argv: Sequence[str]) -> flags.FlagValues:
    """The flags of `argv` (the arguments after the program name), on a fresh FlagValues."""
    from tvilfm_jax.retrieval import index

    fv = flags.FlagValues()
    flags.DEFINE_string("gallery", None, "RGB features directory (python -m tvilfm_jax.extract --modality rgb)",
                        flag_values=fv, required=True)
    flags.DEFINE_string("model", None, "model directory (default: the one the gallery's meta.json names)",
                        flag_values=fv)
    flags.DEFINE_string("query_image", None, "IR query image", flag_values=fv)
    flags.DEFINE_string("queries", None, "or an IR features directory (extract --modality ir [--captions]) ...",
                        flag_values=fv)
    flags.DEFINE_string("query_path", None, "... and the path of the query in it (as in its index.jsonl); its "
                        "stored caption is the IR caption unless --ir_caption is given", flag_values=fv)
    flags.DEFINE_string("text", None, "description of the person (an RGB-style caption)", flag_values=fv)
    flags.DEFINE_string("ir_caption", None, "the IR query image's own caption (Fusion subtracts it)",
                        flag_values=fv)
    flags.DEFINE_list("modalities", None, f"query modalities among {','.join(MODALITIES)} "
                      "(default: all the query allows)", flag_values=fv)
    flags.DEFINE_integer("query_pid", None, "the query's identity, to mark true matches", flag_values=fv)
    flags.DEFINE_integer("top_k", 10, "gallery images to return per modality", flag_values=fv)
    flags.DEFINE_enum("index", "exact", INDEXES, "exact search, or an approximate faiss IVF-SQ8 index",
                      flag_values=fv)
    flags.DEFINE_integer("nprobe", index.DEFAULT_NPROBE, "faiss: IVF lists searched per query", flag_values=fv)
    flags.DEFINE_string("output", "search_results", f"folder for {RESULT_JSON} and {RESULT_PNG}", flag_values=fv)
    cli.parse(["tvilfm_jax.search", *argv], fv, __doc__)
    if (fv.queries is None) != (fv.query_path is None):
        cli.fail("--queries and --query_path go together (an IR features directory and a path in it)")
    if fv.queries is not None and fv.query_image is not None:
        cli.fail("pass one of --query_image and --queries/--query_path")
    if fv.query_image is None and fv.queries is None and fv.text is None:
        cli.fail("give a query: --query_image (an IR image) or --queries/--query_path, --text (a description), "
                 "or both")
    if fv.top_k < 1 or fv.nprobe < 1:
        cli.fail(f"--top_k and --nprobe must be positive, got {fv.top_k} and {fv.nprobe}")
    return fv


def modalities(args: flags.FlagValues) -> tuple[str, ...]:
    if args.modalities is None:
        if args.query_image is None and args.queries is None:
            return ("text",)
        return MODALITIES if args.text is not None else ("ir",)
    unknown = [m for m in args.modalities if m not in MODALITIES]
    if unknown or not args.modalities:
        cli.fail(f"--modalities must list some of {','.join(MODALITIES)}, got {','.join(args.modalities)}")
    return tuple(args.modalities)


def query_pid(args: flags.FlagValues, meta) -> int | None:
    """--query_pid, else the pid the gallery's path pattern reads from the query image's path."""
    if args.query_pid is not None or args.query_image is None or not meta.get("pid_pattern"):
        return args.query_pid
    from tvilfm_jax.retrieval.inputs import parse_ids

    return parse_ids(args.query_image.replace("\\", "/"), re.compile(meta["pid_pattern"]))[0]


def main(argv: Sequence[str]) -> dict:
    """Searches as `argv` (the arguments after the program name) asks; returns {modality: Ranking}."""
    args = parse_args(argv)
    wanted = modalities(args)
    from tvilfm_jax.data.images import ImageReadError, load_image
    from tvilfm_jax.retrieval import ranking
    from tvilfm_jax.retrieval.searcher import Searcher, query_row, stored_features

    try:
        searcher = Searcher(args.gallery, args.model)
        gallery = searcher.gallery
        searcher.require_text(wanted)
        queries = None if args.queries is None else searcher.open_queries(args.queries)
        row = None if queries is None else query_row(queries, args.query_path)
        path = args.query_image if queries is None else queries.image_path(row)
        image = None if path is None else load_image(path)
    except (OSError, ValueError, ImageReadError) as err:
        cli.fail(err)

    caption_feat = None
    if queries is not None:
        feats, caption_feat = stored_features(queries, row)
        entry = queries.entries[row]
        pid = args.query_pid if args.query_pid is not None else entry.pid
        ir_caption = args.ir_caption or entry.caption
    else:
        feats = None if image is None else searcher.image_features(image)
        pid = query_pid(args, gallery.meta)
        ir_caption = args.ir_caption
    try:
        rankings, notes = searcher.search(wanted, feats, args.text, args.ir_caption, args.top_k,
                                          stored_caption_feat=caption_feat, index_kind=args.index, nprobe=args.nprobe)
    except ValueError as err:
        cli.fail(err)

    search = {"index": args.index, "top_k": args.top_k, "modalities": list(wanted), "notes": notes}
    if args.index == "faiss":
        from tvilfm_jax.retrieval import index

        search |= {"nprobe": args.nprobe, "factory": index.factory_string(len(gallery.entries)),
                   "refine": index.REFINE}
    query = {"image": path, "text": args.text, "ir_caption": ir_caption, "pid": pid}
    text = "  |  ".join(f"{k}: {v}" for k, v in (("text", args.text), ("own IR caption", ir_caption)) if v)
    json_path = ranking.write_json(os.path.join(args.output, RESULT_JSON), gallery, rankings, query, search)
    png_path = ranking.write_grid(os.path.join(args.output, RESULT_PNG), gallery, rankings, image,
                                  text or "(no text)", pid)
    for note in notes:
        print(f"note: {note}")
    print(ranking.table(gallery, rankings, pid))
    print(f"wrote {json_path} and {png_path}")
    return rankings


if __name__ == "__main__":
    main(sys.argv[1:])
