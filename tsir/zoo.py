"""Bundled model zoo: small, deterministic, real architectures for tests and benchmarks.

Every model is fp32, in ``eval()`` mode, with static example inputs. Weights are random but seeded,
and BatchNorm layers carry non-trivial running statistics so that BN folding is exercised.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ZooModel", "load", "names"]

Inputs = tuple[torch.Tensor, ...]
Builder = Callable[[int], tuple[nn.Module, Inputs]]

_SEED = 0
_BN_SEED = 1234


@dataclass(frozen=True)
class ZooModel:
    """A ready-to-run model together with deterministic example inputs."""

    name: str
    module: nn.Module
    example_inputs: Inputs
    description: str


Factory = Callable[[int], ZooModel]

_REGISTRY: dict[str, Factory] = {}


def register(name: str, description: str) -> Callable[[Builder], Factory]:
    """Register a builder ``batch -> (module, inputs)`` as the zoo factory ``name``."""

    def decorator(build: Builder) -> Factory:
        def factory(batch: int) -> ZooModel:
            torch.manual_seed(_SEED)
            module, inputs = build(batch)
            _randomize_batchnorm(module)
            return ZooModel(name, module.eval(), inputs, description)

        factory.description = description
        _REGISTRY[name] = factory
        return factory

    return decorator


def names() -> list[str]:
    """All registered model names, in registry order."""
    return list(_REGISTRY)


def description(name: str) -> str:
    """One line about model ``name`` (without building it)."""
    return _REGISTRY[name].description


def load(name: str, batch: int = 1) -> ZooModel:
    """Build model ``name`` with example inputs of batch size ``batch``."""
    if name not in _REGISTRY:
        msg = f"unknown zoo model {name!r}; valid names: {', '.join(_REGISTRY)}"
        raise ValueError(msg)
    return _REGISTRY[name](batch)


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(_SEED)


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=_generator())


def _randomize_batchnorm(module: nn.Module) -> None:
    """Give every BatchNorm layer seeded, non-trivial affine parameters and running statistics."""
    gen = torch.Generator().manual_seed(_BN_SEED)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0.0, 0.1, generator=gen)
                m.running_mean.normal_(0.0, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)


def _conv_bn(
    cin: int,
    cout: int,
    kernel: int,
    stride: int = 1,
    *,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> optional activation, with "same" padding."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------------
# Small classics
# --------------------------------------------------------------------------------------------------


@register("mlp", "3-layer perceptron 64 -> 256 -> 256 -> 10 with ReLU")
def _mlp(batch: int) -> tuple[nn.Module, Inputs]:
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    return model, (_randn(batch, 64),)


class LeNet5(nn.Module):
    """LeNet-5 for 28x28 grey images (first conv padded to keep the classic 32x32 geometry)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@register("lenet", "LeNet-5 CNN for 1x28x28 images")
def _lenet(batch: int) -> tuple[nn.Module, Inputs]:
    return LeNet5(), (_randn(batch, 1, 28, 28),)


# --------------------------------------------------------------------------------------------------
# ResNet-18 (CIFAR)
# --------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN with an identity or 1x1 conv-BN shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, 3, stride)
        self.conv2 = _conv_bn(cout, cout, 3, act=None)
        self.downsample = (
            _conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.downsample(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs: 3x3 stem, no max-pool, four stages of two basic blocks."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 64, 3)
        stages: list[nn.Module] = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


@register("resnet18", "CIFAR-style ResNet-18 (3x32x32, 10 classes)")
def _resnet18(batch: int) -> tuple[nn.Module, Inputs]:
    return ResNet18(), (_randn(batch, 3, 32, 32),)


# --------------------------------------------------------------------------------------------------
# MobileNetV2 (CIFAR, width 0.5)
# --------------------------------------------------------------------------------------------------


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 linear projection (+ residual)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [_conv_bn(cin, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            _conv_bn(hidden, cout, 1, act=None),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 for 32x32 inputs (stride-1 stem, second stage stride 1)."""

    # (expansion, channels, repeats, first stride)
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))  # fmt: skip

    def __init__(self, width: float = 0.5, num_classes: int = 10) -> None:
        super().__init__()
        cin = _make_divisible(32 * width)
        last = _make_divisible(1280 * max(1.0, width))
        layers: list[nn.Module] = [_conv_bn(3, cin, 3, act=nn.ReLU6)]
        for expand, channels, repeats, stride in self.SETTINGS:
            cout = _make_divisible(channels * width)
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers.append(_conv_bn(cin, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register("mobilenet_v2", "CIFAR-style MobileNetV2, width 0.5 (3x32x32, 10 classes)")
def _mobilenet_v2(batch: int) -> tuple[nn.Module, Inputs]:
    return MobileNetV2(), (_randn(batch, 3, 32, 32),)


# --------------------------------------------------------------------------------------------------
# SqueezeNet 1.1 (CIFAR)
# --------------------------------------------------------------------------------------------------


class Fire(nn.Module):
    """SqueezeNet Fire module: 1x1 squeeze, then concatenated 1x1 and 3x3 expands."""

    def __init__(self, cin: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
        self.expand1x1 = nn.Sequential(nn.Conv2d(squeeze, expand1x1, 1), nn.ReLU())
        self.expand3x3 = nn.Sequential(nn.Conv2d(squeeze, expand3x3, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze(x)
        return torch.cat([self.expand1x1(x), self.expand3x3(x)], 1)


class SqueezeNet11(nn.Module):
    """SqueezeNet 1.1 for 32x32 inputs (stride-1 3x3 stem), conv classifier + global average pool."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(64, 16, 64, 64), Fire(128, 16, 64, 64),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(128, 32, 128, 128), Fire(256, 32, 128, 128),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(256, 48, 192, 192), Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256), Fire(512, 64, 256, 256),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Conv2d(512, num_classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


@register("squeezenet", "CIFAR-style SqueezeNet 1.1 with Fire modules (3x32x32, 10 classes)")
def _squeezenet(batch: int) -> tuple[nn.Module, Inputs]:
    return SqueezeNet11(), (_randn(batch, 3, 32, 32),)


# --------------------------------------------------------------------------------------------------
# Single blocks
# --------------------------------------------------------------------------------------------------


class InceptionBlock(nn.Module):
    """Inception-v1 block: 1x1, 1x1->3x3, 1x1->5x5 and maxpool->1x1 branches, concatenated."""

    def __init__(self, cin: int = 64) -> None:
        super().__init__()
        self.branch1 = _conv_bn(cin, 64, 1)
        self.branch3 = nn.Sequential(_conv_bn(cin, 48, 1), _conv_bn(48, 64, 3))
        self.branch5 = nn.Sequential(_conv_bn(cin, 16, 1), _conv_bn(16, 32, 5))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), _conv_bn(cin, 32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1)


@register("inception_block", "Inception-v1 block, four BN+ReLU branches (64x16x16 -> 192x16x16)")
def _inception_block(batch: int) -> tuple[nn.Module, Inputs]:
    return InceptionBlock(), (_randn(batch, 64, 16, 16),)


class ResNeXtBlock(nn.Module):
    """ResNeXt bottleneck: 1x1 reduce-expand, grouped 3x3 (cardinality 8), 1x1, identity residual."""

    def __init__(self, channels: int = 64, width: int = 128, cardinality: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(channels, width, 1),
            _conv_bn(width, width, 3, groups=cardinality),
            _conv_bn(width, channels, 1, act=None),
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + x)


@register("resnext_block", "ResNeXt bottleneck block, grouped 3x3 conv with 8 groups (64x16x16)")
def _resnext_block(batch: int) -> tuple[nn.Module, Inputs]:
    return ResNeXtBlock(), (_randn(batch, 64, 16, 16),)


# --------------------------------------------------------------------------------------------------
# Sequence models
# --------------------------------------------------------------------------------------------------


class BertLayer(nn.Module):
    """Post-LN BERT encoder layer with explicit matmul/softmax self-attention."""

    def __init__(self, hidden: int = 128, heads: int = 4, ffn: int = 512, eps: float = 1e-12) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        return x.reshape(batch, seq, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, hidden = x.shape
        q, k, v = (self._split_heads(proj(x)) for proj in (self.query, self.key, self.value))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        context = torch.matmul(torch.softmax(scores, dim=-1), v)
        context = context.transpose(1, 2).reshape(batch, seq, hidden)
        x = self.attn_norm(x + self.attn_out(context))
        return self.ffn_norm(x + self.ffn(x))


@register("bert_layer", "hand-written BERT encoder layer (hidden 128, 4 heads, FFN 512, seq 32)")
def _bert_layer(batch: int) -> tuple[nn.Module, Inputs]:
    return BertLayer(), (_randn(batch, 32, 128),)


class NASRNN(nn.Module):
    """NASRNN-style cell (as in the TASO benchmarks) unrolled over the time axis of the input."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.input_proj = nn.Linear(hidden, 8 * hidden)
        self.hidden_proj = nn.Linear(hidden, 8 * hidden, bias=False)

    def cell(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        t = (self.input_proj(x) + self.hidden_proj(h)).chunk(8, dim=-1)
        m0 = torch.relu(t[0]) + torch.sigmoid(t[3])
        m1 = torch.sigmoid(t[1]) + torch.tanh(t[2])
        m2 = torch.sigmoid(t[4]) * torch.tanh(t[5])
        m3 = torch.sigmoid(t[6]) * torch.relu(t[7])
        m4 = torch.sigmoid(m1) + torch.tanh(m2)
        m5 = torch.tanh(m0) * torch.tanh(m3)
        return torch.tanh(torch.tanh(m4) * torch.tanh(m5))

    def forward(self, seq: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        for step in range(seq.shape[1]):
            h = self.cell(seq[:, step], h)
        return h


@register("nasrnn", "NASRNN-style recurrent cell unrolled over 4 steps (hidden 64)")
def _nasrnn(batch: int) -> tuple[nn.Module, Inputs]:
    gen = _generator()
    seq = torch.randn((batch, 4, 64), generator=gen)
    return NASRNN(), (seq, torch.randn((batch, 64), generator=gen))


class _LastHiddenState(nn.Module):
    """Wrap a Hugging Face encoder so that ``forward(input_ids)`` returns ``last_hidden_state`` only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).last_hidden_state


@register("hf_bert", "transformers BertModel, 2 layers, hidden 128, 4 heads (int64 input_ids, seq 16)")
def _hf_bert(batch: int) -> tuple[nn.Module, Inputs]:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=1000,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=64,
        attn_implementation="eager",
    )
    input_ids = torch.randint(0, config.vocab_size, (batch, 16), generator=_generator())
    return _LastHiddenState(BertModel(config, add_pooling_layer=False)), (input_ids,)
