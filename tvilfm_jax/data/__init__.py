"""Input side: tokenizer, on-disk layouts, test protocols, transforms, sampler, pipeline.

Nothing is re-exported here so that importing one piece (say, the tokenizer) does not pull in
TFDS or grain.
"""
