"""The dataset registry (`tvilfm_jax.data.datasets`)."""

import pytest

from tvilfm_jax.data import datasets


def test_builders_register_the_registry_names():
    from tfds_builders.llcm import llcm_dataset_builder
    from tfds_builders.regdb import regdb_dataset_builder
    from tfds_builders.synthetic import synthetic_dataset_builder
    from tfds_builders.sysu_mm01 import sysu_mm01_dataset_builder

    for module in (sysu_mm01_dataset_builder, regdb_dataset_builder, llcm_dataset_builder):
        assert module.Builder.name == datasets.TFDS_NAMES[module.Builder.layout]
    regdb = regdb_dataset_builder.Builder
    assert [c.name for c in regdb.BUILDER_CONFIGS] == [datasets.regdb_config_name(t) for t in datasets.REGDB_TRIALS]
    for config in synthetic_dataset_builder.Builder.BUILDER_CONFIGS:
        name = f"{synthetic_dataset_builder.Builder.name}/{config.name}"
        assert name.startswith(datasets.SYNTHETIC_PREFIX)
        assert datasets.layout_of(name) == (config.layout, config.trial)


@pytest.mark.parametrize("layout", datasets.LAYOUTS)
def test_layout_of_reads_the_tfds_names(layout):
    name = datasets.TFDS_NAMES[layout]
    if layout == "regdb":
        assert datasets.layout_of(f"{name}/{datasets.regdb_config_name(7)}:1.0.0") == ("regdb", 7)
    else:
        assert datasets.layout_of(name) == (layout, None)
    assert set(datasets.DEFAULT_PROTOCOLS) == set(datasets.DISPLAY_NAMES) == set(datasets.LAYOUTS)
    with pytest.raises(ValueError, match="cannot tell the dataset layout"):
        datasets.layout_of(f"{name}_v2/x")
    with pytest.raises(ValueError, match=r"layout must be one of \('sysu', 'regdb', 'llcm'\), got 'market'"):
        datasets.check_layout("market")
