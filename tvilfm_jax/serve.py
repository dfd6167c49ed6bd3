r"""`python -m tvilfm_jax.serve --gallery FEATURES [--model DIR] [--queries FEATURES] [--port 8000]`.

Serves a search page and its JSON API (`tvilfm_jax.web.app`) on http://HOST:PORT/ (127.0.0.1 by
default: only this machine can reach it). The gallery is an RGB features directory
(`python -m tvilfm_jax.extract --modality rgb`), searched exactly as `python -m tvilfm_jax.search`
does (exact top-k); --queries, an IR features directory (extract --modality ir [--captions]),
gives the page its test-set queries, their stored captions and identities. The model is loaded
and its functions compiled once, at start.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import flags

from tvilfm_jax import cli


def parse_args(argv: Sequence[str]) -> flags.FlagValues:
    """The flags of `argv` (the arguments after the program name), on a fresh FlagValues."""
    fv = flags.FlagValues()
    flags.DEFINE_string("gallery", None, "RGB features directory (python -m tvilfm_jax.extract --modality rgb)",
                        flag_values=fv, required=True)
    flags.DEFINE_string("model", None, "model directory (default: the one the gallery's meta.json names)",
                        flag_values=fv)
    flags.DEFINE_string("queries", None, "IR features directory whose rows the page offers as queries",
                        flag_values=fv)
    flags.DEFINE_string("host", "127.0.0.1", "address to bind (0.0.0.0 opens it to the network)", flag_values=fv)
    flags.DEFINE_integer("port", 8000, "port to listen on", flag_values=fv)
    cli.parse(["tvilfm_jax.serve", *argv], fv, __doc__)
    if not 0 < fv.port < 65536:
        cli.fail(f"--port must be in 1..65535, got {fv.port}")
    return fv


def main(argv: Sequence[str]) -> None:
    args = parse_args(argv)
    import uvicorn

    from tvilfm_jax.retrieval.searcher import Searcher
    from tvilfm_jax.web.app import create_app

    try:
        searcher = Searcher(args.gallery, args.model)
        queries = None if args.queries is None else searcher.open_queries(args.queries)
    except (OSError, ValueError) as err:
        cli.fail(err)
    searcher.warm_up()
    print(f"serving {args.gallery} ({len(searcher.gallery.entries)} images) on http://{args.host}:{args.port}/",
          flush=True)
    uvicorn.run(create_app(searcher, queries), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1:])
