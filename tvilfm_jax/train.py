r"""Train TVI-LFM: stage 1 (base) or stage 2 (tvilfm) from an ml_collections config file.

    python -m tvilfm_jax.train --config configs/sysu.py --workdir runs/sysu_base
    python -m tvilfm_jax.train --config configs/sysu.py:stage=tvilfm --workdir runs/sysu_tvilfm \
        --config.init.checkpoint=runs/sysu_base/models/last
    python -m tvilfm_jax.train --config configs/regdb.py:trial=3 --config.optim.lr_visual=2e-3 ...

Without --config the embedded synthetic default runs (tvilfm_jax/configs/synthetic.py). Running the same
command again in the same workdir resumes from its latest checkpoint; with a config that differs
from the stored one only given --allow_config_change (e.g. a lower lr after a divergence; the
change is appended to <workdir>/config_changes.jsonl). One run per workdir: a second one started
while the first runs stops at once. The workdir's layout is `tvilfm_jax.run_layout`; one in the
layout before models/ is refused, with the commands that move it. Multi-host: start one
process per host with --coordinator_address (or JAX_COORDINATOR_ADDRESS), --num_processes and
--process_id; each feeds its share of every global batch and all write checkpoints together.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from tvilfm_jax import cli
from tvilfm_jax.configs import synthetic
from tvilfm_jax.training.config import exit_on_unknown_override

# The packaged file (config_flags loads configs by path), so an installed package has it too.
_DEFAULT_CONFIG = synthetic.__file__

# Without --config on the command line, the overrides are applied (and can fail) right here.
with exit_on_unknown_override(_DEFAULT_CONFIG):
    config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG,
                                    "experiment config file[:arg], e.g. configs/sysu.py:stage=tvilfm", lock_config=True)
flags.DEFINE_string("workdir", None, "run directory: checkpoints, metrics.jsonl, TensorBoard, config", required=True)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 for a multi-process run")
flags.DEFINE_integer("num_processes", None, "processes of a multi-process run")
flags.DEFINE_integer("process_id", None, "this process's index in a multi-process run")
flags.DEFINE_integer("stop_after_steps", None, "return after this global step without a final checkpoint, as a "
                     "killed run would (time-boxed jobs; the next run in the workdir resumes)")
flags.DEFINE_bool("allow_config_change", False, "resume a workdir's run with a config that differs from its stored "
                  "config.json (recorded in <workdir>/config_changes.jsonl); without it that is refused")


def evaluator(experiment):
    """The periodic evaluation of `config.eval` on the dataset's test split (tvilfm_jax.eval)."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from tvilfm_jax.eval.runner import make_evaluate_fn

    if jax.process_count() > 1:
        logging.warning("evaluation during multi-process training is not supported: training without it; "
                        "evaluate the exported variables with `python -m tvilfm_jax.evaluate`")
        return None
    sharding = NamedSharding(experiment.mesh, PartitionSpec("data"))
    return make_evaluate_fn(experiment.config, experiment.model, sharding=sharding)


def main(argv: list[str], make_evaluate=None) -> None:
    """make_evaluate: experiment -> evaluate_fn(state) -> {metric: value}, the periodic evaluation
    (see `training.loop.train`); None uses `evaluator` unless `config.train.evaluate` is False."""
    del argv  # absl's, the program name only (`parse_flags` refuses positional arguments)
    FLAGS = flags.FLAGS
    if not FLAGS["verbosity"].present:
        # orbax logs every checkpoint step at INFO; --verbosity=0 brings that back.
        logging.set_verbosity(logging.WARNING)
    # Before anything touches a device.
    from tvilfm_jax.training import mesh

    mesh.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    from tvilfm_jax.training import loop
    from tvilfm_jax.training.checkpointing import CheckpointError
    from tvilfm_jax.training.config import ConfigError
    from tvilfm_jax.training.inputs import DatasetNotFoundError

    try:
        if make_evaluate is None and FLAGS.config.train.evaluate:
            make_evaluate = evaluator
        loop.run(FLAGS.config, FLAGS.workdir, make_evaluate=make_evaluate, stop_after=FLAGS.stop_after_steps,
                 allow_config_change=FLAGS.allow_config_change)
    except (ConfigError, DatasetNotFoundError, loop.NonFiniteLossError, loop.WorkdirError,
            CheckpointError) as err:
        cli.fail(err)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing (`cli.parse`), with a one-line error for a misspelt --config.<key> too."""
    with exit_on_unknown_override(_DEFAULT_CONFIG):
        return cli.parse(argv, flags.FLAGS, __doc__)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
