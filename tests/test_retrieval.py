"""`python -m tvilfm_jax.extract` and `python -m tvilfm_jax.search` on a synthetic SYSU-MM01 tree
with a random small model: the evaluator's numbers, resume, the search outputs, faiss vs exact,
and the one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from tvilfm_jax import artifacts, extract, search
from tvilfm_jax.data.images import load_image
from tvilfm_jax.data.synthetic import write_tree
from tvilfm_jax.eval.features import FeatureExtractor
from tvilfm_jax.eval.testset import FileImages
from tvilfm_jax.models.text import TextConfig
from tvilfm_jax.models.tvilfm import TVILFM, ModelConfig, add_backup, init_variables
from tvilfm_jax.retrieval import index, store

REPO = Path(__file__).resolve().parents[1]
HW = (32, 16)
CONFIG = ModelConfig(num_classes=2, resnet_blocks=(1, 1, 1, 1), resnet_width=4,
                     text=TextConfig(width=32, layers=1, heads=2, embed_dim=128), backup=True)
IR_CAPTIONS = "Text/Blip_IR/caption_dict_Blip_IR.json"  # keyed "datasets/sysu/cam3/...", test IR images
TEXT = "a man in a red t-shirt and blue jeans"


def _files(root: Path, cams) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for c in cams for p in (root / f"cam{c}").rglob("*.jpg"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A synthetic SYSU-MM01 tree, two random models, file lists, and the RGB gallery's features."""
    base = tmp_path_factory.mktemp("retrieval")
    root = base / "tree"
    write_tree(root, "sysu", seed=1, num_train_ids=2, num_val_ids=1, num_test_ids=3, images_per_cam=2,
               image_size=(48, 24))
    init = jax.jit(lambda key: add_backup(init_variables(CONFIG, key, HW)))
    models = [artifacts.save_model(base / f"model{i}", init(jax.random.key(i)), CONFIG) for i in (0, 1)]
    captions = json.loads((root / IR_CAPTIONS).read_text())
    lists = {"rgb": _files(root, (1, 2, 4, 5)), "ir": sorted(k.split("/", 2)[2] for k in captions)}
    for name, paths in lists.items():
        (base / f"{name}.txt").write_text("\n".join(paths) + "\n")
    out = {"base": base, "root": root, "models": models, "lists": lists, "captions": captions}
    out["gallery"] = str(base / "gallery")
    extract.main(_extract_args(out, "rgb", out["gallery"]))
    return out


def _extract_args(built, modality, output, *extra, model=0):
    args = [f"--model={built['models'][model]}", f"--images={built['root']}", f"--modality={modality}",
            f"--file_list={built['base'] / (modality + '.txt')}", f"--output={output}", "--layout=sysu",
            f"--image_size={HW[0]},{HW[1]}", "--batch_size=8", "--shard_size=8", "--noprogress", *extra]
    if modality == "ir":
        args.append(f"--captions={built['root'] / IR_CAPTIONS}")
    return args


def _evaluator(built):
    config, variables = artifacts.load_model(built["models"][0])
    return FeatureExtractor(TVILFM(config), 8, HW, progress=False), variables


def test_extract_gives_the_evaluators_features(built, tmp_path):
    extractor, variables = _evaluator(built)
    root, lists = built["root"], built["lists"]
    gallery = store.open_features(built["gallery"])
    assert [e.path for e in gallery.entries] == lists["rgb"]
    assert [(e.pid, e.cam) for e in gallery.entries] == [(int(p.split("/")[1]), int(p[3])) for p in lists["rgb"]]
    expected = extractor.gallery_embeddings(
        variables, extractor.image_features(variables, FileImages(root, lists["rgb"]), "rgb"))
    assert sorted(gallery.meta["kinds"]) == ["current", "ir"] and gallery.meta["settings"]["image_size"] == list(HW)
    for kind in ("current", "ir"):
        np.testing.assert_allclose(gallery.array(kind), np.asarray(expected[kind]), rtol=1e-5, atol=1e-6)

    extract.main(_extract_args(built, "ir", tmp_path / "queries"))
    queries = store.open_features(tmp_path / "queries")
    # Without --file_list the captions file names the images: the same rows.
    extract.main([a for a in _extract_args(built, "ir", tmp_path / "captioned") if not a.startswith("--file_list")])
    assert store.open_features(tmp_path / "captioned").entries == queries.entries
    feats = extractor.image_features(variables, FileImages(root, lists["ir"]), "ir")
    captions = [built["captions"]["datasets/sysu/" + p]["description"] for p in lists["ir"]]
    assert [e.caption for e in queries.entries] == captions
    np.testing.assert_allclose(queries.array("feat_current"), np.asarray(feats.current), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(queries.array("feat_backup"), np.asarray(feats.backup), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(queries.array("caption_feat"), np.asarray(extractor.text_features(variables, captions)),
                               rtol=1e-5, atol=1e-6)


def test_an_interrupted_extract_resumes_to_the_same_files(built, tmp_path, monkeypatch, capsys):
    output = tmp_path / "gallery"
    written = store.write_shard

    def write_then_stop(directory, start, arrays):
        if start > 0:
            raise KeyboardInterrupt  # killed while embedding the second shard
        written(directory, start, arrays)

    monkeypatch.setattr(store, "write_shard", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        extract.main(_extract_args(built, "rgb", output))
    monkeypatch.undo()
    assert os.listdir(output / store.SHARDS_DIR) == ["0000000000.npz"]
    with pytest.raises(ValueError, match="incomplete"):
        store.open_features(output)

    extract.main(_extract_args(built, "rgb", output))
    assert "resumed after 8" in capsys.readouterr().out
    for name in ("meta.json", "index.jsonl", "current.npy", "ir.npy"):
        assert (output / name).read_bytes() == (Path(built["gallery"]) / name).read_bytes(), name
    assert not (output / store.SHARDS_DIR).exists()
    extract.main(_extract_args(built, "rgb", output))
    assert "already complete" in capsys.readouterr().out


def _error(main, args) -> str:
    with pytest.raises(SystemExit) as info:
        main(args)
    message = str(info.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_bad_input_is_one_line(built, tmp_path):
    assert "holds another extract (model:" in _error(extract.main, _extract_args(built, "rgb", built["gallery"],
                                                                                 model=1))
    args = _extract_args(built, "rgb", tmp_path / "out")
    missing = tmp_path / "missing"
    assert str(missing) in _error(extract.main, [*args, f"--images={missing}"])
    regex = _error(extract.main, [a for a in args if a != "--layout=sysu"] + ["--pid_regex=cam(\\d+)/"])
    assert "(?P<pid>...)" in regex

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cam3/0002/0001.jpg": "x", "cam9/0001/0001.jpg": "y"}))
    ir_args = [a for a in _extract_args(built, "ir", tmp_path / "q") if not a.startswith("--captions")]
    message = _error(extract.main, [*ir_args, f"--captions={bad}"])  # the file list's other images lack one
    assert str(bad) in message and "no caption for 11 of the 12 images" in message and "cam3/0002/0002.jpg" in message
    # Without a file list the keys are the images, and one names no file.
    message = _error(extract.main, [a for a in ir_args if not a.startswith("--file_list")] + [f"--captions={bad}"])
    assert str(bad) in message and "name no image file" in message and "cam9/0001/0001.jpg" in message

    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((48, 24, 3), np.uint8)).save(folder / "a.png")
    (folder / "b.jpg").write_bytes(b"not an image")
    message = _error(extract.main, [f"--model={built['models'][0]}", f"--images={folder}", "--modality=rgb",
                                    f"--output={tmp_path / 'o'}", "--noprogress"])
    assert str(folder / "b.jpg") in message

    other = _error(search.main, [f"--gallery={built['gallery']}", f"--model={built['models'][1]}", f"--text={TEXT}"])
    assert "meta.json" in other and "another model" in other
    assert "not a features directory" in _error(search.main, [f"--gallery={tmp_path}", f"--text={TEXT}"])


def test_search_cli_prints_and_writes_the_exact_top_k(built, tmp_path):
    query = built["root"] / built["lists"]["ir"][0]
    caption = built["captions"]["datasets/sysu/" + built["lists"]["ir"][0]]["description"]
    output = tmp_path / "search"
    proc = subprocess.run(
        [sys.executable, "-m", "tvilfm_jax.search", f"--gallery={built['gallery']}", f"--query_image={query}",
         f"--text={TEXT}", f"--ir_caption={caption}", "--top_k=4", f"--output={output}"],
        cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=300,
        check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((output / search.RESULT_JSON).read_text())
    assert list(result["results"]) == ["ir", "text", "fusion", "mer"] and result["query"]["pid"] == 2
    for m in result["results"]:
        assert f"{m}:" in proc.stdout
    with Image.open(output / search.RESULT_PNG) as png:
        assert png.size[0] > 300

    extractor, variables = _evaluator(built)
    feats = extractor.image_features(variables, [load_image(query)], "ir")
    t = extractor.text_features(variables, [TEXT, caption])
    q = extractor.query_embeddings(variables, feats, t[:1], t[1:])
    gallery = store.open_features(built["gallery"])
    for m, kind in (("ir", "ir"), ("text", "current"), ("fusion", "current")):
        scores = np.asarray(gallery.array(kind)) @ np.asarray(q[m])[0]
        hits = result["results"][m]
        assert [h["row"] for h in hits] == list(np.argsort(-scores, kind="stable")[:4])
        np.testing.assert_allclose([h["score"] for h in hits], np.sort(scores)[::-1][:4], atol=1e-5)
        assert [h["path"] for h in hits] == [gallery.entries[h["row"]].path for h in hits]


def test_stored_queries_text_only_and_faiss(built, tmp_path, capsys):
    path = built["lists"]["ir"][1]
    caption = built["captions"]["datasets/sysu/" + path]["description"]
    extract.main(_extract_args(built, "ir", tmp_path / "queries"))
    common = [f"--gallery={built['gallery']}", f"--text={TEXT}", "--top_k=5", f"--output={tmp_path / 's'}"]
    stored = search.main([*common, f"--queries={tmp_path / 'queries'}", f"--query_path={path}"])
    direct = search.main([*common, f"--query_image={built['root'] / path}", f"--ir_caption={caption}"])
    for m in ("ir", "text", "fusion", "mer"):
        np.testing.assert_array_equal(stored[m].rows, direct[m].rows)
        np.testing.assert_allclose(stored[m].scores, direct[m].scores, rtol=1e-5, atol=1e-6)
    text_only = search.main(common)
    assert list(text_only) == ["text"]
    np.testing.assert_array_equal(text_only["text"].rows, direct["text"].rows)
    no_caption = search.main([*common, f"--query_image={built['root'] / path}", "--modalities=fusion"])
    assert "no --ir_caption" in capsys.readouterr().out and list(no_caption) == ["fusion"]

    approx = search.main([*common, f"--query_image={built['root'] / path}", f"--ir_caption={caption}",
                          "--index=faiss"])
    assert (Path(built["gallery"]) / "current.faiss").is_file()
    for m in ("ir", "text", "fusion", "mer"):  # one IVF list, 20 candidates re-scored exactly
        np.testing.assert_array_equal(approx[m].rows, direct[m].rows)
        np.testing.assert_allclose(approx[m].scores, direct[m].scores, rtol=1e-5, atol=1e-6)


def test_faiss_index_recall_against_exact_search():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 64)).astype(np.float32)
    gallery = centres[rng.integers(0, 50, 6000)] + 0.5 * rng.normal(size=(6000, 64)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries = gallery[rng.choice(6000, 50, replace=False)] + 0.1 * rng.normal(size=(50, 64)).astype(np.float32)
    exact_scores, exact_rows = index.exact_top_k(gallery, queries, 10, chunk_rows=1000)
    brute = queries @ gallery.T
    np.testing.assert_array_equal(exact_rows, np.argsort(-brute, axis=1, kind="stable")[:, :10])
    built_index = index.build_index(gallery)
    assert built_index.ntotal == 6000 and index.num_lists(6000) == 77
    for nprobe, floor in ((index.num_lists(6000), 0.97), (index.DEFAULT_NPROBE, 0.9)):
        _, rows = index.faiss_top_k(built_index, queries, 10, nprobe)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, exact_rows)])
        assert recall >= floor, (nprobe, recall)
    # Every list probed and 40 candidates re-scored exactly: the exact top-10, scores included.
    scores, rows = index.faiss_top_k(built_index, queries, 10, index.num_lists(6000), gallery=gallery)
    np.testing.assert_array_equal(rows, exact_rows)
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout, regex, path, expected", [
    ("sysu", None, "cam3/0012/0004.jpg", (12, 3)),
    ("sysu", None, "/data/SYSU-MM01/cam1/0333/0001.jpg", (333, 1)),
    ("llcm", None, "test_nir/cam7/0042/0042_c07_s1_f2_nir.jpg", (42, 7)),
    ("llcm", None, "vis/0042/0042_c02_s200726_f5220_vis.jpg", (42, 2)),
    ("regdb", None, "Visible/193/female_back_v_06_193.bmp", (193, 2)),
    ("regdb", None, "Thermal/193/female_back_t_06_193.bmp", (193, 1)),
    ("sysu", None, "elsewhere/a.jpg", (None, None)),
    (None, r"(?P<pid>\d+)_c(?P<cam>\d)", "street/0007_c3.png", (7, 3)),
    (None, r"^(?P<pid>\d+)/", "0007/x.png", (7, None)),
    (None, None, "0007/x.png", (None, None)),
])
def test_pid_and_cam_from_paths(layout, regex, path, expected):
    from tvilfm_jax.retrieval.inputs import parse_ids, path_pattern

    assert parse_ids(path, path_pattern(layout, regex)) == expected


def test_index_benchmark_runs_at_tiny_sizes(tmp_path, monkeypatch):
    from benchmarks import search_index

    out = tmp_path / "bench.json"
    monkeypatch.setattr(sys, "argv", ["search_index", "--sizes=2000,4000", "--dim=32", "--clusters=20",
                                      "--queries=20", "--nprobe=2", f"--json={out}"])
    search_index.main()
    report = json.loads(out.read_text())
    assert [s["n"] for s in report["sizes"]] == [2000, 4000] and report["dim"] == 32
    for size in report["sizes"]:
        rows = {(r["nprobe"], r["refine"]): r for r in size["results"]}
        assert set(rows) == {(2, None), (2, 4), (size["lists"], None), (size["lists"], 4)}
        assert rows[size["lists"], 4]["recall@10"] == 1.0  # every list, re-ranked: the exact top 10
