"""Flax modules: dual-stem ResNet, GeM, CLIP text tower, BN-neck, fusion, assembled TVI-LFM.

  batchnorm  PyTorch-exact BatchNorm (unbiased running variance)
  resnet     DualResNet: RGB/IR stems + shared torchvision-v1.5 body, last stride 1
  gem        GeM pooling
  neck       BNNeck (BatchNorm1d + bias-free classifier), l2_normalize
  fusion     SFF and plain-add fusion of IR and caption features
  text       CLIP text tower
  tvilfm     ModelConfig, TVILFM (stage-1/2 forwards, eval embeddings), init_variables, add_backup
"""
