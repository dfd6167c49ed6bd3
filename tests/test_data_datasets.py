"""The dataset registry (`tvilfm_jax.data.datasets`) and the import direction it serves."""

import ast
from pathlib import Path

import pytest

from tvilfm_jax.data import datasets

REPO = Path(__file__).resolve().parents[1]


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
    trial = 7 if layout == "regdb" else None
    assert datasets.layout_of(datasets.tfds_name(layout, trial) + ":1.0.0") == (layout, trial)
    with pytest.raises(ValueError, match="trial"):
        datasets.tfds_name(layout, None if trial else 1)
    assert set(datasets.DEFAULT_PROTOCOLS) == set(datasets.DISPLAY_NAMES) == set(datasets.LAYOUTS)
    with pytest.raises(ValueError, match="cannot tell the dataset layout"):
        datasets.layout_of(f"{name}_v2/x")
    with pytest.raises(ValueError, match=r"layout must be one of \('sysu', 'regdb', 'llcm'\), got 'market'"):
        datasets.check_layout("market")


def _imports(path: Path) -> list[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("tvilfm_jax/data", ("tvilfm_jax.generators", "tvilfm_jax.eval", "tvilfm_jax.training", "tfds_builders")),
    ("tvilfm_jax/models", ("tvilfm_jax.eval", "tvilfm_jax.training", "tvilfm_jax.data", "tfds_builders")),
    ("tvilfm_jax/eval", ("tvilfm_jax.training",)),
    ("tvilfm_jax/run_layout.py", ("tvilfm_jax.",)),  # names only: train, evaluate and demo all read it
    ("tvilfm_jax/artifacts.py", ("tvilfm_jax.eval", "tvilfm_jax.training", "tvilfm_jax.data")),
    ("tvilfm_jax/generators", ("tvilfm_jax.eval", "tvilfm_jax.training", "tfds_builders")),
    ("tfds_builders", ("tvilfm_jax.eval", "tvilfm_jax.training", "tvilfm_jax.generators")),
])
def test_imports_run_downward(package, forbidden):
    root = REPO / package
    paths = [root] if root.is_file() else sorted(root.rglob("*.py"))
    assert paths, package
    wrong = [f"{path.relative_to(REPO)}: {name}" for path in paths for name in _imports(path)
             if name.startswith(forbidden)]
    assert not wrong, wrong
