"""Text generators: BLIP captions, LLM rephrases and colour filtering -> the Text/ file set.

How the released TVI-LFM texts were made (docs/original.md §8), rebuilt for any dataset tree in the
sysu / regdb / llcm layouts:

    python -m tvilfm_jax.generators all --root datasets/regdb --layout regdb \\
        --rgb_model weights/RGB_CAPTION --ir_model weights/IR_CAPTION --llm_model weights/vicuna-7b

Modules: ``image_sets`` (which images need text), ``captioning`` (BLIP), ``rephrasing``
(causal LM), ``filter_files`` (the colour filter over JSON files), ``text_files`` (which
images each Text/ file covers), ``stages`` (resumable stages over a tree), ``progress``
(resumption), ``model_loading`` (local checkpoints, clear errors), ``settings`` (the paper's
defaults). The Text/ formats, the colour filter and the safe writes are the data layer's
(``tvilfm_jax.data.text``). torch is imported only by the model stages: the CLI, the colour
filter and the filter stage run without it.
"""
