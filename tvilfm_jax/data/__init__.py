"""Input side: dataset registry, tokenizer, image reading, on-disk layouts and their Text/ files,
test protocols, transforms, sampler, training input pipeline, synthetic trees.

Nothing is re-exported here so that importing one piece (say, the tokenizer) does not pull in
TFDS or grain.
"""
