"""TFDS builders of the VI-ReID datasets, one package each (what `tfds build <folder>` expects).

    sysu_mm01/   SYSU-MM01 from --manual_dir
    regdb/       RegDB from --manual_dir, configs trial1 ... trial10
    llcm/        LLCM from --manual_dir
    synthetic/   generated people in each real layout (configs sysu, regdb, llcm, *_tiny)

All write the splits train_rgb, train_ir, query and gallery with the features of `schema`
and put num_classes, the identity caption map and the trial galleries in `info.metadata`.
`TVILFM_TFDS_TEXT=0` (or the `with_text=False` builder kwarg) builds without text (stage 1).
Build without TensorFlow from Python:

    from tfds_builders.synthetic import synthetic_dataset_builder
    synthetic_dataset_builder.Builder(config="sysu", data_dir=d).download_and_prepare(file_format="array_record")
    sources = tfds.data_source("synthetic/sysu", data_dir=d)   # no builder import needed to read

`prepare.ensure_built(config.data)` builds a missing synthetic dataset on request (training,
evaluation and the demo call it). Nothing is imported here: importing a builder module
registers its dataset name with TFDS, so each is imported only by whoever builds it.
"""
