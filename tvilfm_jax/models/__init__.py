"""Flax modules: dual-stem ResNet, GeM, CLIP text tower, BN-neck, fusion, assembled TVI-LFM."""
