"""What the `python -m tvilfm_jax.<program>` command lines share: absl flags, a `--help` that lists
every flag with its default, and bad input reported as one line `error: <message>` on stderr with
exit status 1 (no flag listing, no traceback).

train and evaluate define their flags on absl's global `flags.FLAGS` and start with
`absl.app.run` (absl's logging flags such as --verbosity, `ml_collections.config_flags`);
convert, demo, sweep, generators and export define theirs on a fresh `flags.FlagValues` at each
call of their `main(argv)`, so one process (a test) can call it again and again.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

from absl import flags

HELP_ARGS = ("-h", "--help")


def fail(message: object) -> NoReturn:
    """Ends the program with `error: <message>` (one line) on stderr and exit status 1; a
    SystemExit, so a caller in the same process can catch it."""
    raise SystemExit("error: " + " ".join(str(message).splitlines()))


def parse(argv: Sequence[str], flag_values: flags.FlagValues, doc: str, max_positional: int = 0) -> list[str]:
    """Parses argv (program name first) into `flag_values`; returns the positional arguments,
    program name first. An unknown flag, a bad value, a missing required flag or more than
    `max_positional` positional arguments fails with one line.

    -h/--help prints `doc` (the program's usage) and the program's flags with their defaults, and
    exits 0 (absl's own --help, which `absl.app.run` sets up, exits 1; --helpfull still lists
    every library's flags too).
    """
    if any(arg in HELP_ARGS for arg in argv[1:]):
        # The global FLAGS also hold absl's and the libraries' flags: list the program's own.
        listing = (flag_values.main_module_help() if flag_values is flags.FLAGS
                   else flag_values.get_help(include_special_flags=False))
        print(f"{doc.rstrip()}\n\nflags:\n{listing}")
        sys.exit(0)
    try:
        args = flag_values(list(argv))
    except flags.Error as err:
        fail(err)
    if len(args) - 1 > max_positional:
        fail(f"unexpected arguments {args[1 + max_positional:]}")
    return args
