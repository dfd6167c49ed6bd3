"""The embedded default dataset: procedurally drawn people in the real on-disk layouts.

`write_tree(root, layout, seed=0, **sizes)` writes a small SYSU-MM01, RegDB or LLCM tree,
images, split files and Text/ captions included (docs/original.md §5, §9), deterministically per seed.

Modules: `people` (identities), `cameras` (scenes and shots), `render` (RGB and infrared
drawing), `captions` (BLIP-like captions, LLM-like rephrases, colour filter), `trees`
(planning and writing a layout), `seeds` (per-file random streams).
"""

from .trees import plan_tree, write_tree

__all__ = ["plan_tree", "write_tree"]
