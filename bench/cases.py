"""What the bench runs: a zoo or suite model at a batch size, with its example inputs and its Hugging Face
config (None for models without one).

Zoo models are built at the batch size. Suite models come with batch-1 examples; a larger batch gets new
inputs of the same kind: float inputs drawn like the example (normal, seeded), integer token ids drawn
in ``[0, vocab_size)`` of the model's config (else the example's rows repeated).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tsir import suite, zoo
from tsir.approx.real import REAL

# The default run (python -m bench, make bench): a slice of the suite (CNNs, a vision transformer, an encoder, a
# decoder) and of the zoo, 12 (model, batch) pairs at batches 1 and 8 with every system; each takes 2-3.5 minutes
# on 2 cores (vit at batch 8: 220 s on a loaded machine, 61 s of it torch.compile's max-autotune, 49 s tvm_tuned)
DEFAULT_SUITE = ["resnet-basic", "mobilenet-v2", "vit", "bert", "gpt2"]
DEFAULT_ZOO = ["resnet18"]
_SEED = 0


@dataclass
class Case:
    name: str
    source: str  # "zoo", "suite" or "approx" (approximate mode's trained models, with data)
    batch: int
    module: torch.nn.Module | None  # dropped (None) by a worker once a system no longer needs it
    inputs: tuple[torch.Tensor, ...]
    config: object | None  # the transformers config, when the model has one


def names(suite_set: str = "default") -> list[str]:
    """Model names for ``--suite``: ``default`` (``DEFAULT_SUITE``), ``ci`` (every CI-sized suite model),
    ``all`` (also the real-size ones) or ``none``; the zoo's are separate (``zoo.names()``)."""
    choices = {"default": DEFAULT_SUITE, "ci": suite.names(), "all": suite.names(ci=False), "none": []}
    if suite_set not in choices:
        raise ValueError(f"unknown suite set {suite_set!r}; valid: {', '.join(choices)}")
    return list(choices[suite_set])


def known(name: str) -> bool:
    return name in zoo.names() or name in suite.names(ci=False) or name in REAL


def load(name: str, batch: int) -> Case:
    """Model ``name`` (zoo, suite, or approximate mode's ``digits`` / ``minilm`` at their own batch) with
    example inputs of batch size ``batch``."""
    if name in REAL:  # approximate mode's trained models: their own example batch
        module, inputs, _ = REAL[name]()
        if batch != len(inputs[0]):
            raise ValueError(f"{name} runs at batch {len(inputs[0])}, not {batch}")
        return Case(name, "approx", batch, module, tuple(inputs), hf_config(module))
    if name in zoo.names():
        entry = zoo.load(name, batch)
        return Case(name, "zoo", batch, entry.module, tuple(entry.example_inputs), hf_config(entry.module))
    module, inputs = suite.load(name)
    config = hf_config(module)
    return Case(name, "suite", batch, module, tuple(_batched(x, batch, config) for x in inputs), config)


def hf_config(module: torch.nn.Module) -> object | None:
    """The ``transformers`` config of ``module`` or of its first submodule that has one."""
    for sub in module.modules():
        config = getattr(sub, "config", None)
        if config is not None and hasattr(config, "model_type"):
            return config
    return None


def _batched(x: torch.Tensor, batch: int, config) -> torch.Tensor:
    if batch == x.shape[0]:
        return x
    shape = (batch, *x.shape[1:])
    generator = torch.Generator().manual_seed(_SEED + batch)
    if x.is_floating_point():
        return torch.randn(shape, generator=generator, dtype=x.dtype)
    vocab = getattr(config, "vocab_size", None)
    if vocab:
        return torch.randint(0, vocab, shape, generator=generator, dtype=x.dtype)
    return x.repeat(batch, *([1] * (x.dim() - 1)))[:batch]
