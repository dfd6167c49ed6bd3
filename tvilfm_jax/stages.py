"""The two training stages and the two recipes every layer branches on.

Stages (docs/original.md §3.3-3.5): "base" is stage 1, the dual-stream VI-ReID network on
RGB + IR; "tvilfm" is stage 2, the text tower and SFF fusion trained on the frozen stage-1
encoder. Recipes: "paper" keeps the original's behaviour including its silent quirks
(docs/original.md §10.2); "clean" fixes them (optimizer groups, evaluation quirks).
"""

STAGES = ("base", "tvilfm")
RECIPES = ("paper", "clean")
