"""Captioning and rephrasing with tiny randomly initialised models saved to local directories:
batching, the CLI on every layout (read back by the layout readers), resumption, seeding,
prompts and the errors for bad model directories. Nothing is downloaded: the tokenizers are
built here from word lists."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from test_generators_trees import synthetic_tree

import torch
import transformers
pytestmark = pytest.mark.torch

from tvilfm_jax.data.layouts import read_layout
from tvilfm_jax.generators import stages
from tvilfm_jax.generators.__main__ import main
from tvilfm_jax.generators.captioning import caption_batch, load_image
from tvilfm_jax.data.text.colour_filter import remove_colours
from tvilfm_jax.generators.image_sets import list_images
from tvilfm_jax.generators.model_loading import (
    load_blip,
    load_causal_lm,
    resolve_device,
)
from tvilfm_jax.generators.rephrasing import format_prompt
from tvilfm_jax.generators.settings import INSTRUCTION, VICUNA_SYSTEM, SamplingSettings

WORDS = [
    "a", "man", "woman", "person", "in", "black", "white", "grey", "navy", "blue", "shirt", "pants",
    "jacket", "coat", "with", "bag", "the", "is", "and", "walking", "standing", "short", "long",
    "hair", ".", ",", "rephrase", "person's", "description", "above", "using", "similar", "words",
    "answer", ":", "young",
]
CAPTION_LENGTH = 10  # max_length for the tiny captioner; the real default is 50
NEW_TOKENS = 6


def _save_blip(folder: str, seed: int) -> str:
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    os.makedirs(folder)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *WORDS]
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(os.path.join(folder, "vocab.txt"), bos_token="[DEC]")
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    tiny = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
            "initializer_range": 1.0}
    config = BlipConfig(
        text_config=dict(vocab_size=len(vocab), encoder_hidden_size=32, max_position_embeddings=64,
                         bos_token_id=5, eos_token_id=3, sep_token_id=3, pad_token_id=0, **tiny),
        vision_config=dict(image_size=32, patch_size=16, **tiny), projection_dim=32, initializer_range=1.0)
    torch.manual_seed(seed)  # large random weights: captions differ from image to image
    BlipForConditionalGeneration(config).save_pretrained(folder)
    return folder


def _save_causal_lm(folder: str, chat_template: str | None = None) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = ["<pad>", "<unk>", "<s>", "</s>", *WORDS]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece()  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>")
    if chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_positions=128, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=2, eos_token_id=3, pad_token_id=0, initializer_range=0.5)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # Tiny matmuls: on a busy 2-core machine extra intra-op threads only spin (10x slower).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    return {"rgb": _save_blip(str(base / "blip_rgb"), 1), "ir": _save_blip(str(base / "blip_ir"), 2),
            "llm": _save_causal_lm(str(base / "llm"))}


def _cli(root, layout, models, command="all", *extra):
    args = [command, "--root", root, "--layout", layout, "--device", "cpu", "--noprogress"]
    if command in ("caption", "all"):
        args += ["--rgb_model", models["rgb"], "--ir_model", models["ir"], "--caption_batch_size", "3",
                 "--max_length", str(CAPTION_LENGTH)]
    if command in ("rephrase", "all"):
        args += ["--llm_model", models["llm"], "--rephrase_batch_size", "3", "--max_new_tokens", str(NEW_TOKENS)]
    return main(args + list(extra))


def _state(root, name):
    with open(os.path.join(root, "Text", ".generator_state", name)) as f:
        return json.load(f)["items"]


def test_batched_captions_match_one_by_one(models, tmp_path):
    model, processor = load_blip(models["rgb"], None, torch.device("cpu"), torch.float32)
    images = []
    for i in range(4):
        path = str(tmp_path / f"{i}.png")
        size = (8 + i, 16 + 2 * i)  # different sizes in one batch
        from PIL import Image
        Image.fromarray(np.random.default_rng(i).integers(0, 256, size + (3,), dtype=np.uint8)).save(path)
        images.append(load_image(path))
    batched = caption_batch(model, processor, images, CAPTION_LENGTH)
    single = [caption_batch(model, processor, [img], CAPTION_LENGTH)[0] for img in images]
    assert batched == single
    assert len(set(batched)) > 1  # the captions do depend on the image
    assert all(len(processor.tokenizer(c, add_special_tokens=False)["input_ids"]) <= CAPTION_LENGTH for c in batched)
    assert not any("[SEP]" in c or "[DEC]" in c or "[PAD]" in c for c in batched)


@pytest.mark.parametrize("layout", ["sysu", "regdb", "llcm"])
def test_all_writes_the_text_files_the_readers_expect(models, tmp_path, layout):
    root = synthetic_tree(str(tmp_path), layout)
    assert _cli(root, layout, models) == 0
    captions = {m: _state(root, f"captions_{m}.json") for m in ("RGB", "IR")}
    rephrases = {m: _state(root, f"rephrases_{m}.json") for m in ("RGB", "IR")}
    images = list_images(root, layout)
    for m in ("RGB", "IR"):
        assert set(captions[m]) == {e.key for e in images.entries[m]}
        assert set(rephrases[m]) == {e.key for e in images.train_entries(m)}
        for key, value in rephrases[m].items():
            assert value["description"] == captions[m][key]
            assert isinstance(value["aug_description"], str)
    # The captioners are the two checkpoints, one per modality.
    rgb_model, processor = load_blip(models["rgb"], None, torch.device("cpu"), torch.float32)
    first = images.entries["RGB"][0]
    assert captions["RGB"][first.key] == caption_batch(
        rgb_model, processor, [load_image(os.path.join(root, first.path))], CAPTION_LENGTH)[0]

    index = read_layout(root, layout, trial=1 if layout == "regdb" else None, images="exists", synthetic=True)
    for m, records in (("RGB", index.train_rgb), ("IR", index.train_ir)):
        for r in records:
            assert r.caption == captions[m][r.path]
            aug = rephrases[m][r.path]["aug_description"]
            assert r.llm_caption == (aug if m == "RGB" else remove_colours(aug))
    for q in index.query:
        key = "/".join(["nir", *q.path.split("/")[2:]]) if layout == "llcm" else q.path
        assert q.ir_caption == captions["IR"][key]
        assert set(index.id_caption_map[str(q.pid)]) == {
            captions["RGB"][e.key] for e in images.entries["RGB"] if e.pid == q.pid}
    if layout == "regdb":
        with open(os.path.join(root, "Text/Blip_RGB/caption_llm_dict_Blip_RGB.json")) as f:
            assert all(k.startswith("datasets/regdb/Visible/") for k in json.load(f))


def test_interrupted_runs_resume_to_the_same_result(models, tmp_path):
    full = synthetic_tree(str(tmp_path / "full"), "regdb")
    cut = synthetic_tree(str(tmp_path / "cut"), "regdb")
    assert _cli(full, "regdb", models) == 0

    # Stop after 3 captions per modality (one batch): nothing is written to Text/ yet.
    assert _cli(cut, "regdb", models, "caption", "--max_items", "3", "--flush_every", "1") == 0
    done = _state(cut, "captions_RGB.json")
    assert len(done) == 3 and not os.path.exists(os.path.join(cut, "Text", "Blip_RGB"))
    # Mark a finished caption: a rerun must not recompute it.
    marked = next(iter(done))
    path = os.path.join(cut, "Text", ".generator_state", "captions_RGB.json")
    with open(path) as f:
        data = json.load(f)
    data["items"][marked] = "SENTINEL"
    with open(path, "w") as f:
        json.dump(data, f)
    report = stages.caption_dataset(
        stages.Dataset(cut, "regdb"), {"RGB": models["rgb"], "IR": models["ir"]},
        options=stages.RunOptions(device="cpu", batch_size=3, progress=False), max_length=CAPTION_LENGTH)
    assert report.made == {"RGB": 5, "IR": 5} and report.complete
    items = _state(cut, "captions_RGB.json")
    assert items[marked] == "SENTINEL"
    data["items"] = {**items, marked: _state(full, "captions_RGB.json")[marked]}
    with open(path, "w") as f:
        json.dump(data, f)

    # Rephrasing samples: resumption still gives the uninterrupted texts (seeded by batch).
    assert _cli(cut, "regdb", models, "rephrase", "--max_items", "3") == 0
    assert len(_state(cut, "rephrases_RGB.json")) == 3
    assert _cli(cut, "regdb", models, "all") == 0
    for name in ("captions_RGB.json", "captions_IR.json", "rephrases_RGB.json", "rephrases_IR.json"):
        assert _state(cut, name) == _state(full, name), name
    for dirpath, _, files in os.walk(os.path.join(full, "Text")):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), full)
            with open(os.path.join(full, rel), "rb") as a, open(os.path.join(cut, rel), "rb") as b:
                assert a.read() == b.read(), rel
    leftovers = [f for _, _, fs in os.walk(os.path.join(cut, "Text")) for f in fs if f.endswith(".tmp")]
    assert not leftovers


def test_a_failing_image_keeps_the_finished_batches(models, tmp_path):
    root = synthetic_tree(str(tmp_path), "regdb")
    name = list_images(root, "regdb").entries["RGB"][4].path  # 5th RGB image: 2nd batch of 3
    bad = os.path.join(root, name)
    shutil.copy(bad, bad + ".ok")
    with open(bad, "wb") as f:
        f.write(b"not an image")
    with pytest.raises(ValueError, match=f"{name}: cannot read image"):
        _cli(root, "regdb", models, "caption", "--flush_every", "1")
    assert len(_state(root, "captions_RGB.json")) == 3
    os.replace(bad + ".ok", bad)
    assert _cli(root, "regdb", models, "caption") == 0
    assert len(_state(root, "captions_RGB.json")) == 8


def test_rephrase_seeding_and_settings(models, tmp_path):
    root = synthetic_tree(str(tmp_path), "regdb")
    assert _cli(root, "regdb", models, "caption") == 0
    captioned = stages.Dataset(root, "regdb").state_path
    options = stages.RunOptions(device="cpu", batch_size=4, progress=False)

    def run(state, **settings):
        ds = stages.Dataset(root, "regdb", state_dir=str(tmp_path / state))
        if not os.path.exists(ds.state_path):
            shutil.copytree(captioned, ds.state_path)
        report = stages.rephrase_dataset(ds, models["llm"], options, SamplingSettings(max_new_tokens=NEW_TOKENS, **settings))
        assert report.complete
        with open(ds.rephrase_state("RGB")) as f:
            return json.load(f)["items"]

    a, b, c = run("s0", seed=0), run("s0b", seed=0), run("s1", seed=1)
    assert a == b and a != c
    assert run("g0", temperature=0, seed=0) == run("g1", temperature=0, seed=1)  # greedy ignores the seed
    with pytest.raises(ValueError, match=r"rephrases_RGB\.json: was produced with different settings \(seed: 0 -> 1\)"):
        run("s0", seed=1)


def test_prompt_formats(models, tmp_path):
    _, tokenizer = load_causal_lm(models["llm"], torch.device("cpu"), torch.float32)
    caption = "a man in a {grey} coat."
    assert format_prompt(caption, tokenizer) == caption + INSTRUCTION  # no chat template: raw
    assert format_prompt(caption, tokenizer, chat_format="vicuna") == (
        f"{VICUNA_SYSTEM} USER: {caption}{INSTRUCTION} ASSISTANT:")
    assert format_prompt(caption, tokenizer, "Describe: {caption}", "raw") == "Describe: " + caption
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        format_prompt(caption, tokenizer, chat_format="chat")
    with pytest.raises(ValueError, match="must contain '{caption}'"):
        format_prompt(caption, tokenizer, "no slot")
    chat_dir = _save_causal_lm(str(tmp_path / "chat_llm"),
                               "{% for m in messages %}USER: {{ m['content'] }} {% endfor %}ASSISTANT :")
    _, chat_tokenizer = load_causal_lm(chat_dir, torch.device("cpu"), torch.float32)
    assert chat_tokenizer.padding_side == "left"
    assert format_prompt(caption, chat_tokenizer) == f"USER: {caption}{INSTRUCTION} ASSISTANT :"
    root = synthetic_tree(str(tmp_path / "tree"), "regdb")
    assert _cli(root, "regdb", models, "caption") == 0
    assert _cli(root, "regdb", {**models, "llm": chat_dir}, "rephrase") == 0
    assert len(_state(root, "rephrases_IR.json")) == 8


def test_clear_errors(models, tmp_path):
    root = synthetic_tree(str(tmp_path / "tree"), "regdb")
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=f"{missing}: BLIP captioning model directory not found"):
        _cli(root, "regdb", {**models, "ir": missing}, "caption")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty: not a transformers BLIP captioning model checkpoint: no config.json \(found: weights.bin\)"):
        _cli(root, "regdb", {**models, "rgb": str(empty)}, "caption")
    with pytest.raises(ValueError, match=r"llm: expected a BLIP captioning checkpoint \(model_type 'blip'\), found model_type 'gpt2'"):
        _cli(root, "regdb", {**models, "rgb": models["llm"]}, "caption")
    no_processor = str(tmp_path / "blip_without_processor")
    os.makedirs(no_processor)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(models["rgb"], name), no_processor)
    with pytest.raises(ValueError, match="blip_without_processor: no preprocessor_config.json or processor_config.json"):
        _cli(root, "regdb", {**models, "rgb": no_processor}, "caption")
    # ... which --rgb_processor fixes.
    assert _cli(root, "regdb", {**models, "rgb": no_processor}, "caption", "--rgb_processor", models["rgb"],
                "--max_items", "1") == 0
    with pytest.raises(ValueError, match=r"blip_rgb: expected a causal language model checkpoint .*found model_type 'blip'"):
        _cli(root, "regdb", {**models, "llm": models["rgb"]}, "rephrase")
    with pytest.raises(ValueError, match=r"captions_RGB\.json: 5 of 8 RGB training images have no caption yet.*run the caption stage first"):
        _cli(root, "regdb", models, "rephrase")
    with pytest.raises(ValueError, match="IR training images have no rephrase yet"):
        main(["filter", "--root", root, "--layout", "regdb"])
    with pytest.raises(ValueError, match="--device 'nonsense'"):
        resolve_device("nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device 'cuda:0': CUDA is not available"):
            resolve_device("cuda:0")


def test_the_tfds_builder_reads_the_generated_files(models, tmp_path):
    """Generated Text/ files feed a manual TFDS build: each record carries its generated caption."""
    import warnings

    import tensorflow_datasets as tfds

    from tfds_builders import reid_builder
    from tfds_builders.regdb import regdb_dataset_builder
    from tvilfm_jax.data.tokenizer import tokenize

    root = synthetic_tree(str(tmp_path / "tree"), "regdb")
    assert _cli(root, "regdb", models) == 0
    captions = {m: _state(root, f"captions_{m}.json") for m in ("RGB", "IR")}
    builder = regdb_dataset_builder.Builder(config="trial1", data_dir=str(tmp_path / "tfds"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", reid_builder.layouts.DatasetCountWarning)
        builder.download_and_prepare(file_format="array_record",
                                     download_config=tfds.download.DownloadConfig(manual_dir=root))
    source = tfds.data_source("regdb/trial1", data_dir=str(tmp_path / "tfds"))
    for split, modality in (("train_rgb", "RGB"), ("train_ir", "IR"), ("query", "IR")):
        records = [source[split][i] for i in range(len(source[split]))]
        assert records
        for r in records:
            path = r["path"].decode() if isinstance(r["path"], bytes) else r["path"]
            caption = r["caption"].decode() if isinstance(r["caption"], bytes) else r["caption"]
            assert caption == captions[modality][path]
            np.testing.assert_array_equal(r["caption_ids"], tokenize(caption)[0])
