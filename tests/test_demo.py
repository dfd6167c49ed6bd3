"""The quick-start demo runs on the synthetic default and reports every forward path."""

import pytest

from tvilfm_jax import demo

pytestmark = pytest.mark.slow


def test_demo_runs_every_forward_path(tmp_path, capsys):
    demo.main(["--workdir", str(tmp_path), "--ids", "2", "--per-id", "2"])
    out = capsys.readouterr().out
    assert "wrote a synthetic SYSU-MM01 tree" in out
    assert "stage-1 forward (RGB view1, view2, IR): features (12, 512), logits (12, 12)" in out
    assert "stage-2 forward (+ fusion, text):       features (20, 512), logits (20, 12)" in out
    assert "query embeddings:   ir (4, 512), text (4, 512), fusion (4, 512), mer (4, 512)" in out
    assert "full-size TVI-LFM (dual-stem ResNet-50 + CLIP text, SYSU C=395): 88,545,153 params" in out
    # A second run reuses the dataset it wrote.
    demo.main(["--workdir", str(tmp_path), "--ids", "2", "--per-id", "2"])
    assert "wrote a synthetic" not in capsys.readouterr().out
