"""Grain training pipeline: batch layout, determinism, workers, resume, hosts, caption choice."""

import numpy as np
import pytest

from tvilfm_jax.data import pipeline, transforms

H, W = 32, 16  # tiny images keep these tests fast; the transforms do not depend on the size


def make_source(n, num_ids, seed, size=(H, W)):
    """Records in the train_rgb / train_ir schema. caption_ids start with +index, rephrase_ids
    with -index - 1, so a batch row tells which record and which text it came from."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(num_ids), rng.integers(0, num_ids, n - num_ids)])
    records = []
    for i, label in enumerate(labels):
        caption = np.zeros(77, np.int32)
        rephrase = np.zeros(77, np.int32)
        caption[0], rephrase[0] = i, -i - 1
        records.append(
            {
                "image": rng.integers(0, 256, (*size, 3), dtype=np.uint8),
                "label": np.int32(label),
                "cam": np.int32(1),
                "caption_ids": caption,
                "rephrase_ids": rephrase,
            }
        )
    return records


@pytest.fixture(scope="module")
def sources():
    return make_source(70, 6, seed=0), make_source(45, 6, seed=1)


def batches(sources, **kwargs):
    args = dict(ids_per_batch=4, images_per_id=2, seed=7, image_size=(H, W))
    args.update(kwargs)
    return pipeline.TrainBatches(*sources, **args)


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_batch_shapes_dtypes_and_alignment(sources):
    rgb, ir = sources
    tb = batches(sources)
    assert tb.steps_per_epoch == 70 // 8 + 1
    batch = tb(3)
    for key in ("img_rgb_ori", "img_rgb_aug", "img_ir"):
        assert batch[key].shape == (8, H, W, 3) and batch[key].dtype == np.float32
        assert np.isfinite(batch[key]).all()
    for key in ("target_rgb", "target_ir"):
        assert batch[key].shape == (8,) and batch[key].dtype == np.int32
    for key in ("text_rgb", "text_ir"):
        assert batch[key].shape == (8, 77) and batch[key].dtype == np.int32
    np.testing.assert_array_equal(batch["target_rgb"], batch["target_ir"])
    assert len(np.unique(batch["target_rgb"])) == 4
    # Texts come from the sampled records of the right identity.
    for row in range(8):
        i_rgb = int(batch["text_rgb"][row, 0])
        i_rgb = i_rgb if i_rgb >= 0 else -i_rgb - 1
        assert int(rgb[i_rgb]["label"]) == batch["target_rgb"][row]
        i_ir = int(batch["text_ir"][row, 0])
        i_ir = i_ir if i_ir >= 0 else -i_ir - 1
        assert int(ir[i_ir]["label"]) == batch["target_ir"][row]
    # Stage 1: no text keys, and the images are the same as with text.
    no_text = batches(sources, with_text=False)(3)
    assert "text_rgb" not in no_text and "text_ir" not in no_text
    np.testing.assert_array_equal(no_text["img_ir"], batch["img_ir"])


def test_example_is_the_documented_function_of_seed_epoch_position(sources):
    rgb, _ = sources
    tb = batches(sources)
    step = tb.steps_per_epoch + 2  # epoch 1, batch 2
    batch = tb(step)
    order_rgb, _ = tb._order(1)
    row = 5
    rec = rgb[int(order_rgb[2, row])]
    rng = tb.example_rng(1, 2 * 8 + row)
    rng.random(), rng.random()  # the two caption coins come first
    expected = transforms.color1(rec["image"], rng)
    np.testing.assert_array_equal(batch["img_rgb_ori"][row], expected)
    np.testing.assert_array_equal(batch["img_rgb_aug"][row], transforms.color2(rec["image"], rng))


def test_determinism_for_a_seed(sources):
    a, b = batches(sources), batches(sources)
    for step in (0, 9, 10):
        assert_same(a(step), b(step))
    c = batches(sources, seed=8)
    assert not np.array_equal(a(0)["img_rgb_ori"], c(0)["img_rgb_ori"])
    # The next epoch starts with a different batch.
    assert not np.array_equal(a(0)["img_ir"], a(a.steps_per_epoch)["img_ir"])


def test_process_shares_concatenate_to_the_single_process_batch(sources):
    whole = batches(sources)(4)
    parts = [batches(sources, process_index=p, process_count=2)(4) for p in range(2)]
    for key in whole:
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key], err_msg=key)
    assert parts[0]["img_ir"].shape[0] == 4


def test_iterator_resumes_from_saved_state(sources):
    tb = batches(sources)
    it = pipeline.make_iterator(tb.dataset(num_epochs=2))
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(2)]
    resumed = pipeline.make_iterator(tb.dataset(num_epochs=2))
    resumed.set_state(state)
    for want in expected:
        assert_same(next(resumed), want)
    # The explicit step form gives the same stream.
    restarted = pipeline.make_iterator(tb.dataset(num_epochs=2, start_step=3), prefetch=0)
    for want in expected:
        assert_same(next(restarted), want)
    assert len(tb.dataset(num_epochs=2)) == 2 * tb.steps_per_epoch


@pytest.mark.slow
def test_two_workers_give_the_same_batches_and_resume(sources):
    tb = batches(sources)
    ds = tb.dataset(num_epochs=1)
    serial = [tb(i) for i in range(6)]
    it = pipeline.make_iterator(ds, num_workers=2)
    try:
        got = [next(it) for _ in range(4)]
        state = it.get_state()
    finally:
        it.close()
    for want, have in zip(serial, got):
        assert_same(have, want)
    resumed = pipeline.make_iterator(ds, num_workers=2)
    try:
        resumed.set_state(state)
        for want in serial[4:6]:
            assert_same(next(resumed), want)
    finally:
        resumed.close()


def test_caption_choice_probability_and_independence(sources):
    def rephrased(**kwargs):
        tb = batches(sources, **kwargs)
        rows = [tb(step) for step in range(30)]
        text_rgb = np.concatenate([r["text_rgb"][:, 0] for r in rows])
        text_ir = np.concatenate([r["text_ir"][:, 0] for r in rows])
        return text_rgb < 0, text_ir < 0

    rgb, ir = rephrased()
    assert rgb.size == 240
    assert abs(rgb.mean() - 0.5) < 0.1 and abs(ir.mean() - 0.5) < 0.1
    assert abs((rgb & ir).mean() - 0.25) < 0.08  # independent draws
    assert not np.array_equal(rgb, ir)
    rgb, ir = rephrased(llm_aug=False)
    assert not rgb.any() and not ir.any()
    rgb, ir = rephrased(llm_aug_prob=1.0)
    assert rgb.all() and ir.all()


def test_records_are_resized_to_the_configured_size():
    sources = make_source(20, 4, seed=2, size=(64, 32)), make_source(12, 4, seed=3, size=(64, 32))
    tb = pipeline.TrainBatches(*sources, ids_per_batch=2, images_per_id=2, seed=0, image_size=(H, W))
    assert tb(0)["img_rgb_ori"].shape == (4, H, W, 3)


def test_crop_padding_sets_how_far_the_random_crop_shifts():
    """Constant grey images: any pixel of the zero border in a crop comes from the padding."""
    grey = [dict(r, image=np.full((H, W, 3), 200, np.uint8)) for r in make_source(20, 4, seed=4)]
    zero = transforms.normalize(np.zeros((1, 1, 3), np.uint8))[0, 0]

    def border_fraction(**kwargs):
        batch = batches((grey, grey), **kwargs)(0)
        return np.all(batch["img_rgb_ori"] == zero, axis=-1).mean()

    assert border_fraction() > 0.05  # the default pads 10 px
    assert 0 < border_fraction(crop_padding=2) < border_fraction()
    assert border_fraction(crop_padding=0) == 0  # the crop is the whole image
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="crop_padding"):
            batches(sources=(grey, grey), crop_padding=bad)


def test_read_labels_and_label_checks(sources):
    rgb, ir = sources
    labels = pipeline.read_labels(rgb)
    np.testing.assert_array_equal(labels, [int(r["label"]) for r in rgb])
    wrong = np.where(labels == 0, 1, np.where(labels == 1, 0, labels))  # identities 0, 1 swapped
    tb = pipeline.TrainBatches(rgb, ir, ids_per_batch=6, images_per_id=2, labels_rgb=wrong, image_size=(H, W))
    with pytest.raises(ValueError, match="does not match"):
        tb(0)  # every batch holds all 6 identities


def test_bad_records_and_arguments_raise_clear_errors(sources):
    rgb, ir = sources
    missing = [dict(r) for r in rgb]
    for r in missing:
        del r["rephrase_ids"]
    with pytest.raises(KeyError, match="rephrase_ids"):
        batches((missing, ir))(0)
    batches((missing, ir), llm_aug=False)(0)  # rephrases are not needed without llm_aug
    bad_image = [dict(r, image=r["image"].astype(np.float32)) for r in rgb]
    with pytest.raises(ValueError, match="uint8"):
        batches((bad_image, ir))(0)
    with pytest.raises(ValueError, match="divisible"):
        batches(sources, process_count=3)
    with pytest.raises(ValueError, match="ids_per_batch"):
        batches(sources, ids_per_batch=7)
    with pytest.raises(ValueError, match="start_step"):
        batches(sources).dataset(num_epochs=1, start_step=10**6)


@pytest.fixture(scope="module")
def tfds_regdb_tiny(tmp_path_factory):
    """The `synthetic/regdb_tiny` TFDS dataset, built (no TensorFlow) into a temporary data_dir."""
    from tfds_builders.synthetic import synthetic_dataset_builder as builders
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    builders.Builder(config="regdb_tiny", data_dir=data_dir).download_and_prepare(file_format="array_record")
    return data_dir


def test_tfds_sources_decode_like_tfds_and_feed_the_same_batches(tfds_regdb_tiny):
    import tensorflow_datasets as tfds

    rgb, ir = pipeline.tfds_train_sources("synthetic/regdb_tiny", tfds_regdb_tiny)
    assert rgb.direct and ir.direct, "the direct decoder must match tfds' decoding of the schema"
    generic = tfds.data_source(
        "synthetic/regdb_tiny", split="train_rgb", data_dir=tfds_regdb_tiny, download=False
    )
    assert len(rgb) == len(generic) > 0
    for i in range(len(rgb)):
        want, have = generic[i], rgb[i]
        for key in pipeline.TfdsTrainRecords.fields:
            np.testing.assert_array_equal(have[key], want[key], err_msg=f"record {i} {key}")
        assert have["image"].shape == (288, 144, 3) and have["image"].dtype == np.uint8
        assert have["caption_ids"].dtype == np.int32
    # The pipeline gives identical batches from TFDS records and from the same records in a list.
    num_ids = len(np.unique(pipeline.read_labels(rgb)))
    kwargs = dict(ids_per_batch=num_ids, images_per_id=2, seed=3, image_size=(H, W))
    from_tfds = pipeline.TrainBatches(rgb, ir, **kwargs)
    from_list = pipeline.TrainBatches(
        [rgb[i] for i in range(len(rgb))], [ir[i] for i in range(len(ir))], **kwargs
    )
    for step in range(from_tfds.steps_per_epoch + 1):
        assert_same(from_tfds(step), from_list(step))
