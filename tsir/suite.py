"""The model suite: real architectures from Hugging Face ``transformers`` configs, random init, no downloads.

Each entry builds ``(model, example_inputs)`` in ``eval()`` mode; configs are tiny (one or two layers,
narrow widths) so that the whole suite optimizes and verifies in CI, and vary within a family (depths,
widths, heads, kernel sizes, activations). Entries with ``ci=False`` are at real size, for the bench only.
``onnx(name, path)`` writes the entry's ONNX twin through ``torch.onnx.export(..., dynamo=True)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

Inputs = tuple[torch.Tensor, ...]
Factory = Callable[[], tuple[torch.nn.Module, Inputs]]
_SEED = 0


@dataclass(frozen=True)
class SuiteModel:
    name: str
    family: str  # cnn, vision-transformer, encoder, decoder, audio, seq2seq-encoder
    build: Factory
    ci: bool = True  # False: real size, for the bench only


_ENTRIES: dict[str, SuiteModel] = {}


def names(ci: bool = True) -> list[str]:
    """The suite's model names (``ci=False``: also the real-size bench entries)."""
    return [n for n, e in _ENTRIES.items() if e.ci or not ci]


def entry(name: str) -> SuiteModel:
    if name not in _ENTRIES:
        raise ValueError(f"unknown suite model {name!r}; valid names: {', '.join(_ENTRIES)}")
    return _ENTRIES[name]


def load(name: str) -> tuple[torch.nn.Module, Inputs]:
    """Model ``name`` (seeded random weights, eval mode) and its example inputs."""
    torch.manual_seed(_SEED)
    model, inputs = entry(name).build()
    return _trained_like(model).eval(), inputs


_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


@torch.no_grad()
def _trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with the values initialization leaves trivial made random, as training would: zero biases,
    batch-norm statistics at 0 and 1 and its scale and shift at 1 and 0. (Trivial values let an exporter drop
    an add of zeros that a compiler then has to find, and hide errors that scale with them.)"""
    generator = torch.Generator().manual_seed(_SEED)
    for module in model.modules():
        if isinstance(module, _NORMS) and module.track_running_stats:
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
        for param_name, param in module.named_parameters(recurse=False):
            if param_name == "bias" and not param.any():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
            elif param_name == "weight" and isinstance(module, _NORMS):
                param.copy_(torch.rand(param.shape, generator=generator) + 0.5)
    return model


def onnx(name: str, path: str | os.PathLike) -> Path:
    """Write model ``name`` as an ONNX file at ``path`` (``torch.onnx.export`` with ``dynamo=True``)."""
    return export_onnx(*load(name), path)


def export_onnx(model: torch.nn.Module | torch.export.ExportedProgram, inputs: Inputs,
                path: str | os.PathLike) -> Path:
    """Write ``model`` (or its ``torch.export`` program, which saves exporting it again) as ONNX at ``path``."""
    path = Path(path)
    with torch.no_grad():
        torch.onnx.export(model, inputs, str(path), dynamo=True, verbose=False, optimize=True)
    return path


# Relax ops the suite still keeps opaque (run as TVM builds them, no rewrites), each with why: none today
OPAQUE_REASONS: dict[str, str] = {}


def _add(name: str, family: str, ci: bool = True) -> Callable[[Factory], Factory]:
    def wrap(build: Factory) -> Factory:
        _ENTRIES[name] = SuiteModel(name, family, build, ci)
        return build

    return wrap


def _image(size: int = 32, channels: int = 3) -> Inputs:
    return (torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(_SEED)),)


def _tokens(vocab: int, length: int = 16) -> Inputs:
    return (torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(_SEED)),)


def _audio(samples: int) -> Inputs:
    return (torch.randn(1, samples, generator=torch.Generator().manual_seed(_SEED)),)


def _hf(cls_name: str, config_name: str, **config) -> torch.nn.Module:
    import transformers

    return getattr(transformers, cls_name)(getattr(transformers, config_name)(**config))


# ---- CNNs ----
@_add("resnet-basic", "cnn")
def _resnet_basic():
    return _hf("ResNetModel", "ResNetConfig", embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
               layer_type="basic"), _image()


@_add("resnet-bottleneck", "cnn")
def _resnet_bottleneck():
    return _hf("ResNetModel", "ResNetConfig", embedding_size=16, hidden_sizes=[32, 64], depths=[1, 2],
               layer_type="bottleneck", downsample_in_bottleneck=True), _image()


@_add("convnext", "cnn")
def _convnext():
    return _hf("ConvNextModel", "ConvNextConfig", hidden_sizes=[16, 32], depths=[1, 1], num_stages=2,
               patch_size=2), _image()


@_add("convnextv2", "cnn")
def _convnextv2():
    return _hf("ConvNextV2Model", "ConvNextV2Config", hidden_sizes=[16, 24, 32], depths=[1, 1, 1], num_stages=3,
               patch_size=2, hidden_act="relu"), _image()


@_add("mobilenet-v1", "cnn")
def _mobilenet_v1():
    return _hf("MobileNetV1Model", "MobileNetV1Config", depth_multiplier=0.25, image_size=32,
               min_depth=4), _image()


@_add("mobilenet-v2", "cnn")
def _mobilenet_v2():
    return _hf("MobileNetV2Model", "MobileNetV2Config", depth_multiplier=0.35, image_size=32,
               min_depth=4, tf_padding=False), _image()


@_add("efficientnet", "cnn")
def _efficientnet():
    return _hf("EfficientNetModel", "EfficientNetConfig", image_size=32, width_coefficient=0.25,
               depth_coefficient=0.2, hidden_dim=320, kernel_sizes=[3, 5, 3, 5], in_channels=[32, 16, 24, 40],
               out_channels=[16, 24, 40, 80], strides=[1, 2, 2, 2], num_block_repeats=[1, 1, 1, 1],
               expand_ratios=[1, 6, 6, 6], depthwise_padding=[]), _image()


@_add("regnet", "cnn")
def _regnet():
    return _hf("RegNetModel", "RegNetConfig", embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
               groups_width=8, layer_type="y"), _image()


# ---- vision transformers ----
@_add("vit", "vision-transformer")
def _vit():
    return _hf("ViTModel", "ViTConfig", image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
               num_attention_heads=4, intermediate_size=64), _image()


@_add("deit", "vision-transformer")
def _deit():
    return _hf("DeiTModel", "DeiTConfig", image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=1,
               num_attention_heads=3, intermediate_size=96, hidden_act="gelu_new"), _image()


@_add("beit", "vision-transformer")
def _beit():
    return _hf("BeitModel", "BeitConfig", image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
               num_attention_heads=2, intermediate_size=64, use_mean_pooling=True), _image()


@_add("swin", "vision-transformer")
def _swin():
    return _hf("SwinModel", "SwinConfig", image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
               num_heads=[2, 4], window_size=4), _image()


@_add("clip-vision", "vision-transformer")
def _clip_vision():
    return _hf("CLIPVisionModel", "CLIPVisionConfig", image_size=32, patch_size=8, hidden_size=32,
               num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, hidden_act="quick_gelu"), _image()


# ---- text encoders ----
def _encoder(cls_name: str, config_name: str, vocab: int = 96, length: int = 16, **config):
    config = {"vocab_size": vocab, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
              "intermediate_size": 64, "max_position_embeddings": 64, **config}
    return _hf(cls_name, config_name, **config), _tokens(vocab, length)


@_add("bert", "encoder")
def _bert():
    return _encoder("BertModel", "BertConfig", num_hidden_layers=2)


@_add("roberta", "encoder")
def _roberta():
    return _encoder("RobertaModel", "RobertaConfig", hidden_size=48, num_attention_heads=3, pad_token_id=1)


@_add("distilbert", "encoder")
def _distilbert():
    return _hf("DistilBertModel", "DistilBertConfig", vocab_size=96, dim=32, n_layers=1, n_heads=2, hidden_dim=64,
               max_position_embeddings=64), _tokens(96)


@_add("electra", "encoder")
def _electra():
    return _encoder("ElectraModel", "ElectraConfig", embedding_size=16, hidden_act="gelu_new")


@_add("deberta-v2", "encoder")
def _deberta_v2():
    return _encoder("DebertaV2Model", "DebertaV2Config", relative_attention=False, position_biased_input=True)


@_add("albert", "encoder")
def _albert():
    return _encoder("AlbertModel", "AlbertConfig", embedding_size=16, num_hidden_layers=2)


# ---- decoders (causal masks) ----
def _decoder(cls_name: str, config_name: str, vocab: int = 96, **config):
    config = {"vocab_size": vocab, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
              "intermediate_size": 64, "max_position_embeddings": 64, "use_cache": False, **config}
    return _hf(cls_name, config_name, **config), _tokens(vocab)


@_add("gpt2", "decoder")
def _gpt2():
    return _hf("GPT2Model", "GPT2Config", vocab_size=96, n_embd=32, n_layer=2, n_head=2, n_positions=64,
               use_cache=False, bos_token_id=0, eos_token_id=0), _tokens(96)


@_add("gpt-neo", "decoder")
def _gpt_neo():
    return _hf("GPTNeoModel", "GPTNeoConfig", vocab_size=96, hidden_size=32, num_layers=2, num_heads=4,
               attention_types=[[["global", "local"], 1]], window_size=8, max_position_embeddings=64,
               use_cache=False, bos_token_id=0, eos_token_id=0), _tokens(96)


@_add("llama", "decoder")
def _llama():
    return _decoder("LlamaModel", "LlamaConfig", num_key_value_heads=2)


@_add("mistral", "decoder")
def _mistral():
    return _decoder("MistralModel", "MistralConfig", hidden_size=48, num_attention_heads=6, num_key_value_heads=3,
                    sliding_window=8)


@_add("phi", "decoder")
def _phi():
    return _decoder("PhiModel", "PhiConfig", partial_rotary_factor=0.5, hidden_act="gelu_new")


@_add("gemma", "decoder")
def _gemma():
    return _decoder("GemmaModel", "GemmaConfig", num_key_value_heads=1, head_dim=8)


@_add("qwen2", "decoder")
def _qwen2():
    return _decoder("Qwen2Model", "Qwen2Config", num_key_value_heads=2, num_hidden_layers=2)


# ---- audio ----
@_add("whisper-encoder", "audio")
def _whisper_encoder():
    model = _hf("WhisperModel", "WhisperConfig", num_mel_bins=16, d_model=32, encoder_layers=1, decoder_layers=1,
                encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                max_source_positions=16, vocab_size=96, use_cache=False,
                pad_token_id=0, bos_token_id=0, eos_token_id=0, decoder_start_token_id=0)
    return model.get_encoder(), (torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(_SEED)),)


def _speech(cls_name: str, config_name: str, **config):
    config = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64,
              "conv_dim": (16, 16), "conv_kernel": (10, 3), "conv_stride": (5, 2), "num_conv_pos_embeddings": 8,
              "num_conv_pos_embedding_groups": 4, **config}
    return _hf(cls_name, config_name, **config), _audio(400)


@_add("wav2vec2", "audio")
def _wav2vec2():
    return _speech("Wav2Vec2Model", "Wav2Vec2Config")


@_add("hubert", "audio")
def _hubert():
    return _speech("HubertModel", "HubertConfig", feat_extract_norm="layer", do_stable_layer_norm=True,
                   conv_bias=True)


# ---- encoder halves of seq2seq models ----
def _seq2seq_encoder(cls_name: str, config_name: str, **config):
    config = {"vocab_size": 96, "d_model": 32, "encoder_layers": 1, "decoder_layers": 1,
              "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 64,
              "decoder_ffn_dim": 64, "max_position_embeddings": 64, "use_cache": False, **config}
    return _hf(cls_name, config_name, **config).get_encoder(), _tokens(96)


@_add("bart-encoder", "seq2seq-encoder")
def _bart_encoder():
    return _seq2seq_encoder("BartModel", "BartConfig")


@_add("marian-encoder", "seq2seq-encoder")
def _marian_encoder():
    return _seq2seq_encoder("MarianModel", "MarianConfig", activation_function="swish", pad_token_id=95,
                            decoder_start_token_id=95)


@_add("t5-encoder", "seq2seq-encoder")
def _t5_encoder():
    return _hf("T5EncoderModel", "T5Config", vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2,
               num_heads=4, feed_forward_proj="gated-gelu"), _tokens(96)


# ---- real size, bench only ----
@_add("resnet50-224", "cnn", ci=False)
def _resnet50():
    return _hf("ResNetModel", "ResNetConfig"), _image(224)


@_add("bert-base-128", "encoder", ci=False)
def _bert_base():
    return _hf("BertModel", "BertConfig", vocab_size=30522), _tokens(30522, 128)
