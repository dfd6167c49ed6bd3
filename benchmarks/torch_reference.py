"""The TVI-LFM network in PyTorch: the one PyTorch reference of the original's modules.

The reference side of `benchmarks/run.py` and of the parity tests (tests/test_models_visual.py,
test_conversion.py, test_losses.py, test_optim.py import it as `from benchmarks import
torch_reference`).

Built from the same `ModelConfig` as the JAX model, with the official `CLIP2ReID` state-dict
layout (docs/original.md §1.9), so `tvilfm_jax.conversion.official.convert_official` turns its weights into
the JAX model's variables and both sides start from identical parameters:

  base_model.visual.{rgb_model,ir_model}.resnet_conv.{0: conv7x7, 1: BN}   stems (no ReLU, docs/original.md §1.2)
  base_model.visual.shared_model.resnet_conv.{0..3}   torchvision v1.5 bottleneck layers, last stride 1
  base_model.visual.GEM.p                             GeM exponent (init 3)
  base_model.{token_embedding, positional_embedding, transformer.resblocks.*, ln_final, text_projection}
  classifier.{BN, classifier}                          BN-neck + bias-free Linear (N(0, 0.001))
  logit_scale                                          unused by the losses (docs/original.md §1.8); layout only
  backup_pool.p, backup_classifier.*                   only with `config.backup` (stage 2, docs/original.md §1.7)

`DualResNet.from_torchvision` builds the visual encoder from a torchvision-layout ResNet the way
the original does (`torchvision_resnet`, `torchvision_resnet50_last_stride1`), for the tests of
`convert_torchvision_resnet`.

Math follows docs/original.md §3-4 and the JAX port exactly: stage 1 = CE + WRT over [rgb1; rgb2; ir]; stage 2
= CE + WRT over [rgb1; rgb2; ir; ir + t - t_ir; t] with the visual encoder under no_grad but in
train mode (its BN statistics drift, the "paper" recipe). Two deliberate differences from the
original's code, both mathematically neutral, keep the comparison framework-against-framework:
the caption sets go through the text tower in one [2B, 77] call, and ln_final + projection are
applied to the EOT rows only (the original projects all 77 tokens, ~3 % more text FLOPs, then
picks EOT). `wrt_loss` uses a stable softplus; `wrt_loss_original_overflowing` keeps the
original's SoftMarginLoss, which overflows to inf past a margin of ~88.

The optimizer is Adam with coupled L2 decay (torch.optim.Adam's `weight_decay`) with the
docs/original.md §4.5 name rules, grouped by (lr, wd) rather than one group per parameter as the original does
(fewer groups let PyTorch batch its Adam kernels: a stronger baseline). Frozen parameters have
`requires_grad=False` and are not given to the optimizer, like Adam skipping grad-less params.
Images are NCHW float tensors (normalised); token ids int64 [N, 77].
"""

from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck, conv1x1

from tvilfm_jax.models.resnet import EXPANSION, LAYER_STRIDES
from tvilfm_jax.models.tvilfm import ModelConfig
from tvilfm_jax.stages import STAGES



# --- visual ------------------------------------------------------------------------------------


def _stem(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Module:
    """conv7x7 s2 -> BN -> maxpool3x3 s2, no ReLU. Wrapped so keys read `resnet_conv.{0,1}`."""
    holder = nn.Module()
    holder.resnet_conv = nn.Sequential(conv, bn, nn.MaxPool2d(3, 2, 1))
    return holder


def _new_stem(width: int) -> nn.Module:
    return _stem(nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(width))


def _layer(in_ch: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """torchvision's `ResNet._make_layer` for v1.5 Bottlenecks (stride on the 3x3 conv)."""
    out_ch = planes * EXPANSION
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
    layers = [Bottleneck(in_ch, planes, stride, downsample)]
    layers += [Bottleneck(out_ch, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def _layers(blocks: tuple[int, ...], width: int) -> list[nn.Sequential]:
    """layer1..4 of a last-stride-1 ResNet with base width `width` (torchvision fixes 64)."""
    layers, in_ch = [], width
    for i, (count, stride) in enumerate(zip(blocks, LAYER_STRIDES)):
        layers.append(_layer(in_ch, width * 2**i, count, stride))
        in_ch = width * 2**i * EXPANSION
    return layers


def torchvision_resnet(blocks: tuple[int, ...] = (1, 1, 1, 1), width: int = 8) -> nn.Module:
    """A torchvision-layout ResNet (conv1, bn1, maxpool, layer1..4 of torchvision Bottlenecks) of
    any base width, last stride 1, no head: the input of `convert_torchvision_resnet`."""
    model = nn.Module()
    model.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    model.maxpool = nn.MaxPool2d(3, 2, 1)
    for i, layer in enumerate(_layers(blocks, width)):
        setattr(model, f"layer{i + 1}", layer)
    return model


def torchvision_resnet50_last_stride1() -> nn.Module:
    """torchvision's own ResNet-50 (random weights) with layer4's stride set to 1, as the original."""
    import torchvision

    model = torchvision.models.resnet50(weights=None)
    model.layer4[0].conv2.stride = (1, 1)
    model.layer4[0].downsample[0].stride = (1, 1)
    return model


class GeM(nn.Module):
    """(mean_hw clamp(x, eps)^p)^(1/p) in fp32: [N, C, H, W] -> [N, C]."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), p))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().clamp(min=self.eps).pow(self.p)
        return x.mean(dim=(2, 3)).pow(1.0 / self.p)


class DualResNet(nn.Module):
    """The original's Dual_Resnet: modality stems + shared body + GeM, with its state_dict keys.

    `forward(rgb, ir)` -> GeM features [Nr+Ni, D] fp32; `feature_map(rgb, ir)` -> the body's map
    [Nr+Ni, D, H/16, W/16]. Either input may be None; the body runs once on the concatenation
    ("1/3" routing, docs/original.md §3.2), so its BN statistics in train mode cover both modalities.
    Build with `random(blocks, width)` or `from_torchvision(resnet)`.
    """

    def __init__(self, rgb_stem: nn.Module, ir_stem: nn.Module, layers: list[nn.Sequential]):
        super().__init__()
        self.rgb_model = rgb_stem
        self.ir_model = ir_stem
        self.shared_model = nn.Module()
        self.shared_model.resnet_conv = nn.Sequential(*layers)
        self.GEM = GeM()

    @classmethod
    def random(cls, blocks: tuple[int, ...], width: int) -> "DualResNet":
        """Fresh PyTorch-default weights; each stem its own."""
        return cls(_new_stem(width), _new_stem(width), _layers(blocks, width))

    @classmethod
    def from_torchvision(cls, resnet: nn.Module) -> "DualResNet":
        """From a torchvision-layout ResNet, as the original builds it: each stem a copy of
        conv1/bn1, the body a copy of layer1..4."""
        stem = lambda: _stem(copy.deepcopy(resnet.conv1), copy.deepcopy(resnet.bn1))  # noqa: E731
        return cls(stem(), stem(), [copy.deepcopy(getattr(resnet, f"layer{i}")) for i in range(1, 5)])

    def feature_map(self, rgb: torch.Tensor | None = None, ir: torch.Tensor | None = None) -> torch.Tensor:
        parts = [stem.resnet_conv(x) for stem, x in ((self.rgb_model, rgb), (self.ir_model, ir)) if x is not None]
        if not parts:
            raise ValueError("DualResNet needs at least one image batch (rgb or ir)")
        x = parts[0] if len(parts) == 1 else torch.cat(parts)
        return self.shared_model.resnet_conv(x)

    def forward(self, rgb: torch.Tensor | None = None, ir: torch.Tensor | None = None) -> torch.Tensor:
        return self.GEM(self.feature_map(rgb, ir))


# --- text --------------------------------------------------------------------------------------


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (as CLIP's), returned in the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class ResidualAttentionBlock(nn.Module):
    """x + MHA(ln_1(x), causal), then x + MLP(ln_2(x)). [N, L, W] -> [N, L, W]."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(
            c_fc=nn.Linear(width, 4 * width), gelu=QuickGELU(), c_proj=nn.Linear(4 * width, width)))
        self.ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))


class BaseModel(nn.Module):
    """Visual encoder + CLIP text tower (the original's `base_model`)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        t = config.text
        self.visual = DualResNet.random(config.resnet_blocks, config.resnet_width)
        self.token_embedding = nn.Embedding(t.vocab_size, t.width)
        self.positional_embedding = nn.Parameter(torch.empty(t.context_length, t.width))
        self.transformer = Transformer(t.width, t.layers, t.heads)
        self.ln_final = LayerNorm(t.width)
        self.text_projection = nn.Parameter(torch.empty(t.width, t.embed_dim))
        causal = torch.full((t.context_length, t.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", causal, persistent=False)
        # OpenAI CLIP's text initialisation, so random-weight losses are of a sane size.
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=t.width**-0.5)
        proj_std = t.width**-0.5 * (2 * t.layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=t.width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * t.width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """EOT features: ids int [N, L] -> [N, embed_dim] (fp32 outside autocast)."""
        length = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:length]
        mask = self.attn_mask[:length, :length]
        for block in self.transformer.resblocks:
            x = block(x, mask)
        x = x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)]
        return self.ln_final(x) @ self.text_projection


class Classifier(nn.Module):
    """BN-neck + bias-free classifier: train -> logits [N, C]; eval -> L2(BN(x)) [N, D]."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.BN = nn.BatchNorm1d(dim)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.BN(x.float())
        if self.training:
            return self.classifier(y)
        return y / y.norm(dim=-1, keepdim=True)


class TorchTVILFM(nn.Module):
    """The whole network in the official key layout. See the module docstring."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.fusion != "sff":
            raise ValueError(f"torch reference implements fusion 'sff' only, got {config.fusion!r}")
        self.config = config
        self.base_model = BaseModel(config)
        self.classifier = Classifier(config.embed_dim, config.num_classes)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))), requires_grad=False)
        # Stage 2 under Fix_Visual: frozen copies of the stage-1 GeM and neck (docs/original.md §1.7).
        if config.backup:
            self.backup_pool = copy.deepcopy(self.base_model.visual.GEM)
            self.backup_classifier = copy.deepcopy(self.classifier)

    def stage1(self, rgb1: torch.Tensor, rgb2: torch.Tensor, ir: torch.Tensor):
        """[B,3,H,W] x3 -> (pre-BN features [3B, D] fp32, logits [3B, C])."""
        feats = self.base_model.visual(torch.cat([rgb1, rgb2]), ir)
        return feats, self.classifier(feats)

    def stage2(self, rgb1, rgb2, ir, text_rgb: torch.Tensor, text_ir: torch.Tensor):
        """images [B,3,H,W] x3, captions [B,77] x2 -> (features [5B, D], logits [5B, C])."""
        with torch.no_grad():  # frozen, yet in train mode: batch statistics, drifting running stats
            feats = self.base_model.visual(torch.cat([rgb1, rgb2]), ir)
        b = ir.shape[0]
        t = self.base_model.encode_text(torch.cat([text_rgb, text_ir])).float()
        t_rgb, t_ir = t[:b], t[b:]
        x = torch.cat([feats, feats[2 * b:] + t_rgb - t_ir, t_rgb])
        return x, self.classifier(x)

    @torch.no_grad()
    def gallery_embeddings(self, rgb: torch.Tensor) -> torch.Tensor:
        """Eval-mode RGB gallery embeddings L2(BN(GeM(visual_rgb))): [N,3,H,W] -> [N, D]."""
        return self.classifier(self.base_model.visual(rgb, None))

    @torch.no_grad()
    def eval_embeddings(self, rgb, ir, text_rgb, text_ir):
        """docs/original.md §6.2-6.3 with Fix_Visual + Feat_Filter + CAT_EVAL, in eval mode.

        rgb, ir [N,3,H,W]; captions [N,77] -> (gallery {"current", "ir"}, query {"ir", "text",
        "fusion", "mer"}), each [N, D]. "ir" goes through the backups where the model has them.
        """
        self.eval()
        visual = self.base_model.visual
        g_map, q_map = visual.feature_map(rgb=rgb), visual.feature_map(ir=ir)
        f_ir = visual.GEM(q_map)
        t, t_ir = self.base_model.encode_text(text_rgb), self.base_model.encode_text(text_ir)
        q_f, q_i, q_t = self.classifier(f_ir + t - t_ir), self.classifier(f_ir), self.classifier(t)
        backup_pool = getattr(self, "backup_pool", visual.GEM)
        backup_neck = getattr(self, "backup_classifier", self.classifier)
        return ({"current": self.classifier(visual.GEM(g_map)), "ir": backup_neck(backup_pool(g_map))},
                {"ir": backup_neck(backup_pool(q_map)), "text": q_t, "fusion": q_f, "mer": q_f + q_i + q_t})


def state_dict_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """The state dict as fp32/int numpy arrays (the input of `convert_official`)."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


# --- losses ------------------------------------------------------------------------------------


def _wrt_margins(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """docs/original.md §4.2 in fp32: [N, D], [N] -> (softmax-weighted furthest positive, closest negative) [N].

    The same numbers as the original's masked-softmax helper: its positive shift is the row
    maximum of the masked distances, and its shift of the negatives is always 0.
    """
    x = x.float()
    sq = (x * x).sum(dim=1)
    dist = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp(min=1e-12).sqrt()
    same = (labels[:, None] == labels[None, :]).float()
    diff = 1.0 - same
    dist_ap, dist_an = dist * same, dist * diff
    exp_ap = torch.exp(dist_ap - dist_ap.max(dim=1, keepdim=True).values) * same
    w_ap = exp_ap / (exp_ap.sum(dim=1, keepdim=True) + 1e-6)
    exp_an = torch.exp(-dist_an) * diff
    w_an = exp_an / (exp_an.sum(dim=1, keepdim=True) + 1e-6)
    return (dist_ap * w_ap).sum(dim=1), (dist_an * w_an).sum(dim=1)


def wrt_loss(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Weighted regularised triplet, mean softplus(d+ - d-) with a stable softplus (as the JAX
    loss): [N, D], [N] -> scalar."""
    furthest_positive, closest_negative = _wrt_margins(x, labels)
    return F.softplus(furthest_positive - closest_negative).mean()


def wrt_loss_original_overflowing(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The original's ending, SoftMarginLoss(d- - d+, 1) = mean log(1 + exp(d+ - d-)): inf in
    fp32 once d+ - d- passes ~88 (docs/original.md §10). Otherwise equal to `wrt_loss`."""
    furthest_positive, closest_negative = _wrt_margins(x, labels)
    target = torch.ones_like(furthest_positive)
    return nn.SoftMarginLoss()(closest_negative - furthest_positive, target)


def total_loss(feats: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE(logits) + WRT(pre-BN features), both fp32 (docs/original.md §4.3)."""
    return F.cross_entropy(logits.float(), labels) + wrt_loss(feats, labels)


# --- optimizer ---------------------------------------------------------------------------------


def param_group(name: str, optim: Any, stage: str) -> tuple[float, float] | None:
    """(lr, wd) of a parameter by the original's name rules (docs/original.md §4.5); None if frozen."""
    trained = ("base_model.visual", "classifier") if stage == "base" else ("base_model.transformer",
                                                                           "base_model.token_embedding",
                                                                           "base_model.positional_embedding",
                                                                           "base_model.ln_final",
                                                                           "base_model.text_projection",
                                                                           "classifier")
    if not name.startswith(trained):
        return None
    lr_v, wd = optim.lr_visual, optim.visual_weight_decay
    if "transformer" in name:
        if "bias" in name:
            return optim.lr_txt * optim.text_bias_lr_factor, optim.text_weight_decay_bias
        return optim.lr_txt, wd
    if "visual" in name:
        if "bias" in name:
            return lr_v * optim.visual_bias_lr_factor, optim.visual_weight_decay_bias
        return lr_v, wd
    if "classifier" in name:
        return lr_v * optim.classifier_lr_factor, wd
    if "bias" in name:  # base_model.ln_final.bias: solver/build.py's catch-all bias rule
        return lr_v * optim.visual_bias_lr_factor, optim.visual_weight_decay_bias
    return lr_v, wd


def make_optimizer(model: TorchTVILFM, optim: Any, stage: str) -> torch.optim.Adam:
    """Adam(0.9, 0.999, eps) with coupled L2 decay over the stage's trained parameters.

    Freezes (requires_grad=False) everything the stage does not train. `optim` is the config's
    optim section (lr_visual, lr_txt, *_weight_decay*, *_lr_factor, adam_b1/b2/eps).
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        hp = param_group(name, optim, stage)
        p.requires_grad_(hp is not None)
        if hp is not None:
            groups.setdefault(hp, []).append(p)
    return torch.optim.Adam([{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()],
                            betas=(optim.adam_b1, optim.adam_b2), eps=optim.adam_eps)


# --- the train step ----------------------------------------------------------------------------


@dataclasses.dataclass
class TorchStep:
    """One training step: `step(batch) -> loss` (a 0-d tensor, not synchronised).

    batch: {"img_rgb_ori", "img_rgb_aug", "img_ir": [B,3,H,W] float, "target_rgb", "target_ir": [B]
    int64, and for stage "tvilfm" "text_rgb", "text_ir": [B,77] int64}, already on the device.
    amp: autocast fp16 + GradScaler (the original's CUDA mixed precision). compile: the
    forward + loss go through `torch.compile` (backward via AOTAutograd; the Adam step stays eager).
    `skipped` counts steps whose Adam update GradScaler skipped (inf/NaN gradients): it starts at
    a scale of 2^16 and halves it on every overflow, so the first AMP steps are often skipped and
    would time too fast.
    """

    model: TorchTVILFM
    optimizer: torch.optim.Adam
    stage: str
    amp: bool = False
    compile: bool = False

    def __post_init__(self):
        device = next(self.model.parameters()).device
        self._device_type = device.type
        self._scaler = torch.amp.GradScaler(device.type) if self.amp else None
        self._loss = torch.compile(self._forward_loss) if self.compile else self._forward_loss
        self.skipped = 0
        self.last_skipped = False

    def _forward_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        with torch.autocast(self._device_type, dtype=torch.float16, enabled=self.amp):
            if self.stage == "base":
                feats, logits = self.model.stage1(batch["img_rgb_ori"], batch["img_rgb_aug"], batch["img_ir"])
                labels = torch.cat([batch["target_rgb"], batch["target_rgb"], batch["target_ir"]])
            else:
                feats, logits = self.model.stage2(batch["img_rgb_ori"], batch["img_rgb_aug"], batch["img_ir"],
                                                  batch["text_rgb"], batch["text_ir"])
                labels = torch.cat([batch["target_rgb"], batch["target_rgb"]] + [batch["target_ir"]] * 3)
        return total_loss(feats, logits, labels)

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(batch)
        if self._scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self._scaler.scale(loss).backward()
            scale = self._scaler.get_scale()
            self._scaler.step(self.optimizer)
            self._scaler.update()
            self.last_skipped = self._scaler.get_scale() < scale  # update() backs off only after a skip
            self.skipped += self.last_skipped
        return loss.detach()


def to_torch_batch(batch: Mapping[str, np.ndarray], device: torch.device,
                   channels_last: bool = False) -> dict[str, torch.Tensor]:
    """NHWC float32 images -> NCHW tensors; int arrays -> int64 tensors; all on `device`."""
    out = {}
    for key, value in batch.items():
        t = torch.from_numpy(np.ascontiguousarray(value))
        if t.ndim == 4:
            t = t.permute(0, 3, 1, 2)
            t = t.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        elif not t.is_floating_point():
            t = t.long()
        out[key] = t.to(device)
    return out


def gallery_extractor(model: TorchTVILFM, device: torch.device, amp: bool = False,
                      channels_last: bool = False) -> Callable[[np.ndarray], torch.Tensor]:
    """uint8 [N, H, W, 3] -> L2-normalised gallery embeddings [N, D] (eval mode, on `device`).

    Normalisation (ToTensor + ImageNet Normalize) runs on the device, as the JAX extractor does.
    """
    from tvilfm_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    @torch.inference_mode()
    def extract(images: np.ndarray) -> torch.Tensor:
        model.eval()
        x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        x = ((x - mean) / std).contiguous(memory_format=fmt)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            return model.gallery_embeddings(x)

    return extract
