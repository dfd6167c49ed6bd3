"""The `tfds build` CLI (the tfds-cli extra: tensorflow, apache-beam, mlcroissant) on our builders.

The CLI lives in its own environment so that the main one stays free of TensorFlow. Point
TVILFM_TFDS_CLI at that environment's `tfds` executable, e.g.

    python3.11 -m venv .venv-tfdscli && .venv-tfdscli/bin/pip install -e '.[tfds-cli]'
    TVILFM_TFDS_CLI=.venv-tfdscli/bin/tfds python -m pytest tests/test_tfds_cli.py

The build runs in a subprocess with this checkout first on PYTHONPATH, and its output is read
back here, without TensorFlow, and compared with a Python-path build of the same config.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfds_builders import schema
from tfds_builders.synthetic import synthetic_dataset_builder

CLI_ENV = "TVILFM_TFDS_CLI"
REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not os.environ.get(CLI_ENV),
    reason=f"{CLI_ENV} is not set: point it at the `tfds` executable of an environment with the tfds-cli extra",
)


def _cli() -> str:
    cli = Path(os.environ[CLI_ENV]).expanduser()
    if not cli.is_file():
        pytest.fail(f"{CLI_ENV}={cli} is not a file; expected the path of a `tfds` executable")
    return str(cli.resolve())


def _records(data_dir, name):
    sources = tfds.data_source(name, data_dir=str(data_dir))
    return {split: [sources[split][i] for i in range(len(sources[split]))] for split in schema.SPLITS}


@pytest.mark.slow
def test_cli_build_equals_python_build(tmp_path):
    cli_dir, py_dir = tmp_path / "cli", tmp_path / "python"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    command = [
        _cli(), "build", str(REPO / "tfds_builders" / "synthetic"), "--config", "sysu_tiny",
        "--file_format=array_record", f"--data_dir={cli_dir}",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path, check=False)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr[-4000:]}"
    assert (cli_dir / "synthetic" / "sysu_tiny" / "1.1.0" / "dataset_info.json").is_file()

    synthetic_dataset_builder.Builder(config="sysu_tiny", data_dir=str(py_dir)).download_and_prepare(file_format="array_record")
    cli, python = _records(cli_dir, "synthetic/sysu_tiny"), _records(py_dir, "synthetic/sysu_tiny")
    for split in schema.SPLITS:
        assert len(cli[split]) == len(python[split]) > 0, split
        for a, b in zip(cli[split], python[split]):
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{split} {key}")
        assert cli[split][0]["image"].dtype == np.uint8 and cli[split][0]["image"].shape == (288, 144, 3)
    meta_cli = tfds.builder("synthetic/sysu_tiny", data_dir=str(cli_dir)).info.metadata
    meta_py = tfds.builder("synthetic/sysu_tiny", data_dir=str(py_dir)).info.metadata
    assert dict(meta_cli) == dict(meta_py)
    assert meta_cli["num_classes"] == 4 and meta_cli["counts"]["train_rgb"] == len(cli["train_rgb"])
    assert "tensorflow" not in sys.modules  # the reading side stayed TensorFlow-free
