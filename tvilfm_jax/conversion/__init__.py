"""Conversion of PyTorch checkpoints into Flax variables.

Modules: `common` (reading .pth files, key/shape checking, layout transposes), `resnet` (torchvision ResNet-50),
`clip_text` (OpenAI CLIP text tower), `official` (released TVI-LFM .pth checkpoints).
"""
