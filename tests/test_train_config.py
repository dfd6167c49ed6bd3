"""Experiment configs (tvilfm_jax/configs, loaded as configs/*.py), their command-line overrides and the training helpers
that need no training run (validation, ModelConfig, metrics file, averages)."""

import json
from pathlib import Path

import pytest
from absl import flags
from ml_collections import config_flags

from tvilfm_jax import optim
from tvilfm_jax.eval.settings import EvalSettings
from tvilfm_jax.models.tvilfm import ModelConfig
from tvilfm_jax.training import config as train_config
from tvilfm_jax.training import logging as train_logging

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def load(spec: str, *overrides: str):
    """Parses `--config=<spec> <overrides>` exactly as the train CLI does."""
    argv = ["train", f"--config={CONFIGS / spec}", *overrides]
    fv = flags.FlagValues()
    # Overrides are found in the argv given here (the CLI: sys.argv).
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True, sys_argv=argv)
    fv(argv)
    return fv.config


@pytest.mark.parametrize("name", ["sysu", "regdb", "llcm", "synthetic"])
@pytest.mark.parametrize("stage", ["base", "tvilfm"])
def test_every_config_loads_and_validates(name, stage):
    c = load(f"{name}.py:stage={stage}", "--config.init.checkpoint=/some/base")
    assert c.stage == stage and c.recipe == "paper"
    train_config.validate(c)
    # The docs/original.md §2 defaults every dataset shares.
    assert (c.optim.adam_b1, c.optim.adam_b2, c.optim.adam_eps) == (0.9, 0.999, 1e-8)
    assert c.optim.visual_weight_decay == 5e-4 and c.optim.classifier_lr_factor == 2.0
    if name != "synthetic":
        assert c.data.ids_per_batch * c.data.images_per_id == 32
        assert tuple(c.data.image_size) == (288, 144)
        assert c.train.num_epochs == 120 and tuple(c.optim.milestones) == (40, 60, 100)
        assert c.optim.warmup_epochs == 10 and c.optim.warmup_factor == 0.01
        assert (c.model.resnet_width, tuple(c.model.resnet_blocks)) == (64, (3, 4, 6, 3))


def test_per_dataset_overrides_follow_the_scripts():
    """docs/original.md §2 script flags, stage by stage."""
    sysu1, sysu2 = load("sysu.py"), load("sysu.py:stage=tvilfm")
    assert (sysu1.optim.lr_visual, sysu1.optim.lr_txt, sysu1.train.eval_start_epoch) == (3.5e-4, 1e-5, 80)
    assert (sysu2.optim.lr_visual, sysu2.optim.lr_txt, sysu2.optim.text_weight_decay_bias) == (3.5e-4, 3.5e-4, 5e-4)
    assert sysu2.train.eval_start_epoch == 0 and sysu1.data.name == sysu2.data.name == "sysu_mm01"
    llcm2 = load("llcm.py:stage=tvilfm")
    assert (llcm2.data.name, llcm2.optim.lr_txt, llcm2.optim.text_weight_decay_bias) == ("llcm", 3.5e-4, 5e-4)
    regdb1, regdb2 = load("regdb.py:trial=7"), load("regdb.py:stage=tvilfm,trial=3")
    assert (regdb1.data.name, regdb1.optim.lr_visual) == ("regdb/trial7", 2e-3)
    # RegDB stage 2 only changes lr_visual: lr_txt 1e-5, no text bias decay, eval from 80.
    assert (regdb2.data.name, regdb2.optim.lr_visual, regdb2.optim.lr_txt) == ("regdb/trial3", 2e-3, 1e-5)
    assert (regdb2.optim.text_weight_decay_bias, regdb2.train.eval_start_epoch) == (0.0, 80)
    assert load("synthetic.py:layout=llcm,recipe=clean").data.name == "synthetic/llcm"
    assert load("synthetic.py:recipe=clean").recipe == "clean"


def test_command_line_overrides_and_locked_keys():
    c = load("sysu.py", "--config.optim.lr_visual=2e-3", "--config.data.image_size=(64, 32)",
             "--config.model.compute_dtype=bfloat16")
    assert c.optim.lr_visual == 2e-3 and tuple(c.data.image_size) == (64, 32)
    assert c.model.compute_dtype == "bfloat16"
    with pytest.raises((AttributeError, flags.Error), match="lr_visual"):  # names the near key
        load("sysu.py", "--config.optim.lr_visul=2e-3")
    with pytest.raises(AttributeError):
        load("sysu.py").optim.new_key = 1  # the tree is locked


@pytest.mark.parametrize("arg, message", [
    ("sysu.py:stage=final", "stage"),
    ("sysu.py:trial=2", "trial"),
    ("regdb.py:trial=11", "trial"),
    ("regdb.py:trial=x", "trial"),
    ("synthetic.py:layout=market", "layout"),
    ("sysu.py:recipe=fast", "recipe"),
])
def test_bad_config_arguments_are_named(arg, message):
    with pytest.raises(Exception, match=message):
        load(arg)


@pytest.mark.parametrize("override, key", [
    ("--config.stage=stage3", "config.stage"),
    ("--config.recipe=fast", "config.recipe"),
    ("--config.data.ids_per_batch=0", "config.data.ids_per_batch"),
    ("--config.data.llm_aug_prob=1.5", "config.data.llm_aug_prob"),
    ("--config.data.image_size=(8, 8)", "config.data.image_size"),
    ("--config.model.compute_dtype=float64", "config.model.compute_dtype"),
    ("--config.model.text_heads=3", "config.model.text_width"),
    ("--config.train.checkpoint_every_steps=0", "config.train.checkpoint_every_steps"),
])
def test_validation_names_the_bad_key(override, key):
    with pytest.raises(train_config.ConfigError, match=key.replace(".", r"\.")):
        train_config.validate(load("synthetic.py", override))


@pytest.mark.parametrize("name", ["sysu", "regdb", "llcm", "synthetic"])
def test_repository_config_paths_load_the_packaged_configs(name):
    """`--config configs/<name>.py` (README) and the package module give one tree; the
    package file is what `train` loads without --config (no checkout needed)."""
    import importlib

    module = importlib.import_module(f"tvilfm_jax.configs.{name}")
    assert load(f"{name}.py:stage=tvilfm").to_json() == module.get_config("stage=tvilfm").to_json()
    assert Path(module.__file__).parent == Path(train_config.__file__).parents[1] / "configs"


def test_config_defaults_are_the_settings_dataclasses():
    """The tree is built from the dataclasses' defaults and validates back into them."""
    settings = train_config.validate(load("sysu.py"))
    assert settings.data == train_config.DataSettings() and settings.model == train_config.ModelSettings()
    assert settings.train == train_config.TrainSettings() and settings.optim == optim.OptimSettings()
    assert settings.eval == EvalSettings(modalities=("ir",))  # stage 1 scores IR only
    assert settings.model.model_config(395, backup=False, dtype="float32") == ModelConfig(num_classes=395)


@pytest.mark.parametrize("change, message", [
    (lambda c: c["data"].update(extra=1), r"config\.data: unknown key\(s\) \['extra'\]"),
    (lambda c: c["model"].pop("fusion"), r"config: missing key 'model\.fusion'"),
    (lambda c: c["train"].update(num_epochs="ten"),
     r"config\.train\.num_epochs must be of type int \(default 120\), got 'ten'"),
    (lambda c: c["optim"].update(milestones=5), r"config\.optim\.milestones must be of type tuple"),
    (lambda c: c["eval"].update(flip=()), r"config\.eval\.flip must list False and/or True"),
    (lambda c: c["model"].update(fusion="concat"), r"config\.model: ModelConfig\.fusion must be one of"),
])
def test_hand_written_trees_are_checked_key_by_key(change, message):
    tree = load("synthetic.py").to_dict()  # a plain nested dict, as a hand-written config
    change(tree)
    with pytest.raises(train_config.ConfigError, match=message):
        train_config.validate(tree)


def test_paper_selects_stage2_by_fusion_rank1():
    """The official stage-2 script tests Fusion without MER (--CAT_EVAL), so its best model is the
    best Fusion R1; stage 1 scores IR only; the key stays overridable and is checked."""
    for name in ("sysu", "regdb", "llcm", "synthetic"):
        assert load(f"{name}.py:stage=tvilfm").train.best_metric == "fusion/R1"
        assert load(f"{name}.py").train.best_metric == "rank1" and load(f"{name}.py").eval.modalities == ("ir",)
    assert load("sysu.py:stage=tvilfm,recipe=clean").train.best_metric == "rank1"
    c = load("synthetic.py:stage=tvilfm", "--config.init.checkpoint=/some/base", "--config.train.best_metric=mer/R1")
    train_config.validate(c)
    assert c.train.best_metric == "mer/R1"
    c = load("synthetic.py:stage=tvilfm", "--config.init.checkpoint=/some/base", "--config.eval.modalities=('ir',)")
    with pytest.raises(train_config.ConfigError, match=r"best_metric='fusion/R1' needs the 'fusion' query"):
        train_config.validate(c)


def test_stage2_needs_an_initial_checkpoint():
    with pytest.raises(train_config.ConfigError, match=r"init\.checkpoint"):
        train_config.validate(load("synthetic.py:stage=tvilfm"))


def test_model_config_from_experiment():
    base = train_config.model_config(load("sysu.py"), num_classes=395)
    assert base.embed_dim == base.text.embed_dim == 2048 and not base.backup
    assert (base.text.vocab_size, base.text.context_length, base.text.width, base.text.layers) == (49408, 77, 512, 12)
    assert base.dtype == "float32"  # "auto" on CPU
    stage2 = train_config.model_config(load("synthetic.py:stage=tvilfm"), num_classes=40)
    assert stage2.backup and stage2.embed_dim == stage2.text.embed_dim == 32 * 16
    assert train_config.compute_dtype("auto", backend="gpu") == "bfloat16"
    assert train_config.compute_dtype("auto", backend="cpu") == "float32"
    assert base.architecture_differences(base) == []
    other = train_config.model_config(load("sysu.py", "--config.model.text_layers=2"), num_classes=394)
    assert base.architecture_differences(other) == ["num_classes: 395 vs 394", "text.layers: 12 vs 2"]


def test_metrics_file_is_cut_back_to_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"kind": "train", "step": s, "epoch": 0, "loss": 1.0 / s} for s in (1, 2, 3, 4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"kind": "train", "st')  # torn by a kill
    train_logging.truncate_metrics(str(path), 2)
    assert train_logging.read_metrics(str(path)) == records[:2]
    log = train_logging.MetricsLog(str(tmp_path), resume_step=1)
    log.write("epoch", 5, 1, {"loss": 0.5})
    log.close()
    assert [r["step"] for r in train_logging.read_metrics(str(path))] == [1, 5]
    assert any((tmp_path / "tensorboard").iterdir())


def tensorboard_events(logdir: Path) -> list:
    """Every `Event` proto of the TensorBoard event files under `logdir` (TFRecord framing: a
    uint64 length, its CRC, the record, its CRC), read with tensorboardX's protobufs."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            events.append(Event.FromString(data[pos + 12:pos + 12 + length]))
            pos += 12 + length + 4
    return events


def test_tensorboard_gets_the_config_as_hparams_and_the_cmc_figure(tmp_path):
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    config = load("synthetic.py:stage=tvilfm")
    log = train_logging.MetricsLog(str(tmp_path))
    log.hparams(json.loads(config.to_json()), ["epoch/loss", "eval/fusion/R1"])
    log.write("eval", 8, 1, {"rank1": 50.0})
    log.cmc(8, {"IR (sysu)": [0.25, 0.5, 1.0], "Fusion (sysu)": [0.5, 0.75, 1.0]}, "SYSU-MM01 all-search")
    log.close()
    values = [(e.step, v) for e in tensorboard_events(tmp_path / "tensorboard") for v in e.summary.value]
    plugin = {v.tag: HParamsPluginData.FromString(v.metadata.plugin_data.content)
              for _, v in values if v.metadata.plugin_data.plugin_name == "hparams"}
    assert set(plugin) == {"_hparams_/experiment", "_hparams_/session_start_info"}
    hparams = plugin["_hparams_/session_start_info"].session_start_info.hparams
    assert hparams["stage"].string_value == "tvilfm"
    assert hparams["optim.lr_visual"].number_value == config.optim.lr_visual
    assert hparams["train.evaluate"].bool_value is True
    assert json.loads(hparams["data.image_size"].string_value) == list(config.data.image_size)
    assert len(hparams) == len(train_logging.flat_hparams(json.loads(config.to_json())))
    experiment = plugin["_hparams_/experiment"].experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["epoch/loss", "eval/fusion/R1"]
    assert [(step, v.simple_value) for step, v in values if v.tag == "eval/rank1"] == [(8, 50.0)]
    (step, image), = [(step, v.image) for step, v in values if v.tag == train_logging.CMC_TAG]
    assert step == 8 and (image.width, image.height) == (600, 450)  # plot_cmc's 6 x 4.5 inches at 100 dpi
    assert image.encoded_image_string.startswith(b"\x89PNG")


def test_averages_survive_a_round_trip_through_json():
    a = train_logging.Averages()
    a.add({"loss": 1.0, "acc": 0.5})
    a.add({"loss": 3.0, "acc": 1.0})
    b = train_logging.Averages(json.loads(json.dumps(a.state())))
    b.add({"loss": 5.0, "acc": 0.0})
    assert b.means() == {"loss": 3.0, "acc": 0.5} and b.count == 3
    assert train_logging.Averages().means() == {}


def test_missing_dataset_says_how_to_build_it(tmp_path):
    from tfds_builders import prepare
    from tvilfm_jax.training import inputs

    c = load("sysu.py", f"--config.data.data_dir={tmp_path}")
    with pytest.raises(inputs.DatasetNotFoundError, match=r"config\.data\.name='sysu_mm01'.*tfds build"):
        inputs.load_sources(c.data)
    with pytest.raises(ValueError, match="only builds synthetic"):
        prepare.ensure_built(load("sysu.py", "--config.data.build_synthetic=True").data)


def test_each_stage_draws_its_own_input_stream():
    from tvilfm_jax.training.inputs import data_seed

    seeds = {data_seed(s, stage) for s in range(50) for stage in ("base", "tvilfm")}
    assert len(seeds) == 100


def test_an_option_added_since_a_run_was_written_changes_nothing_at_its_default():
    """A config.json written before eval.rerank existed resumes and is reused under today's
    config (the option's default is the old behaviour); any other difference still counts."""
    now = json.loads(load("synthetic.py").to_json())
    stored = json.loads(json.dumps(now))
    for key in ("rerank", "rerank_k1", "ranking_worst"):
        del stored["eval"][key]
    assert train_config.config_changes(stored, now) == []
    assert train_config.config_diff(stored, now) == ["eval.ranking_worst", "eval.rerank", "eval.rerank_k1"]
    now["eval"]["rerank"] = True
    now["optim"]["lr_visual"] = 1.0
    assert train_config.config_changes(stored, now) == ["eval.rerank", "optim.lr_visual"]
    del now["eval"]["rerank"], now["optim"]["lr_visual"], stored["optim"]["lr_visual"]
    del now["eval"]["max_rank"]  # an option of the stored run that is gone: a change
    assert train_config.config_changes(stored, now) == ["eval.max_rank"]
