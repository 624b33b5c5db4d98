"""Architecture adapters: where each model family keeps its MLP neurons.

A *neuron* is a unit of the MLP's hidden layer: for gated MLPs (Llama, Mistral, Qwen, Gemma, SmolLM)
the input of ``down_proj``, i.e. ``act(gate(x)) * up(x)``; for GPT-2/NeoX/Phi-style MLPs the input of
the output projection, i.e. ``act(fc(x))``. That single hook point (a forward-pre-hook on the output
projection) reads and ablates every neuron of a layer (ALGORITHMS.md section 8).

Besides the hook point an adapter knows, per layer, the *read* vectors (rows of up/gate or fc, in
residual space), the *write* vectors (columns of down/c_proj), and the model's final norm gain and
unembedding, which neuron decoding needs (ALGORITHMS.md section 6).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from app.engine.errors import UnsupportedArchitecture

GATED_FAMILIES = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "smollm3", "olmo",
                  "olmo2", "granite"}
NON_GATED_FAMILIES = {"gpt2", "gpt_neox", "phi"}


@dataclass
class MlpSite:
    """One layer's MLP: ``up`` (pre-activation read, the NAG unit), optional ``gate``, and ``down`` (write);
    ``block`` is the whole decoder layer and ``act`` the MLP's activation function (of gate, or of fc)."""

    up: nn.Module
    gate: nn.Module | None
    down: nn.Module
    block: nn.Module | None = None
    act: Callable | None = None


def _linear_rows(module: nn.Module) -> torch.Tensor:
    """Read vectors [d_out, d_in] of an ``nn.Linear`` or a GPT-2 ``Conv1D`` (which stores W transposed)."""
    weight = module.weight
    return weight.T if type(module).__name__ == "Conv1D" else weight


def _linear_cols(module: nn.Module) -> torch.Tensor:
    """Write vectors [d_in, d_out]: column k of the output projection, one row per neuron."""
    weight = module.weight
    return weight if type(module).__name__ == "Conv1D" else weight.T


@dataclass
class Adapter:
    """Locates the neurons of one architecture family inside a loaded ``PreTrainedModel``."""

    family: str
    gated: bool

    def sites(self, model: nn.Module) -> list[MlpSite]:
        """The MLP of every decoder layer, in order."""
        return [self._site(layer) for layer in self._layers(model)]

    def _layers(self, model: nn.Module):
        for path in ("model.layers", "transformer.h", "gpt_neox.layers"):
            obj = model
            try:
                for part in path.split("."):
                    obj = getattr(obj, part)
                return list(obj)
            except AttributeError:
                continue
        raise UnsupportedArchitecture(f"cannot find the decoder layers of a '{self.family}' model")

    def _site(self, layer: nn.Module) -> MlpSite:
        mlp = layer.mlp
        act = getattr(mlp, "act_fn", None) or getattr(mlp, "act", None) or getattr(mlp, "activation_fn", None)
        if self.gated:
            return MlpSite(up=mlp.up_proj, gate=mlp.gate_proj, down=mlp.down_proj, block=layer, act=act)
        for up_name, down_name in (("c_fc", "c_proj"), ("dense_h_to_4h", "dense_4h_to_h"), ("fc1", "fc2")):
            if hasattr(mlp, up_name):
                return MlpSite(up=getattr(mlp, up_name), gate=None, down=getattr(mlp, down_name), block=layer,
                               act=act)
        raise UnsupportedArchitecture(f"cannot find the MLP projections of a '{self.family}' layer")

    def read_vectors(self, site: MlpSite, which: str = "up") -> torch.Tensor:
        """[d_ff, d_model]: the residual-space direction each neuron reads (``which`` = up | gate)."""
        module = site.gate if which == "gate" else site.up
        if module is None:
            raise UnsupportedArchitecture(f"a '{self.family}' MLP has no gate projection")
        return _linear_rows(module)

    def write_vectors(self, site: MlpSite) -> torch.Tensor:
        """[d_ff, d_model]: what each neuron adds to the residual stream per unit of activation."""
        return _linear_cols(site.down)

    def final_gain(self, model: nn.Module) -> torch.Tensor:
        """The final norm's elementwise gain γ (Gemma stores γ-1)."""
        base = model.get_decoder() if hasattr(model, "get_decoder") else model
        for name in ("norm", "ln_f", "final_layer_norm", "final_layernorm"):
            norm = getattr(base, name, None)
            if norm is not None and getattr(norm, "weight", None) is not None:
                gain = norm.weight
                return gain + 1.0 if self.family.startswith("gemma") else gain
        return torch.ones(model.config.hidden_size, device=model.device)

    @property
    def plain_residual_write(self) -> bool:
        """True when a neuron reaches the next block only as ``a_k * write_k`` added to the residual stream
        (no norm after the MLP output, as Gemma 2/3 and OLMo 2 have): the premise of ``nag.local_edges``."""
        return self.family not in {"gemma2", "gemma3_text", "olmo2"}

    def unembedding(self, model: nn.Module) -> torch.Tensor:
        """[vocab, d_model]: the LM head (the token embedding when tied)."""
        return model.get_output_embeddings().weight


def adapter_for(model: nn.Module) -> Adapter:
    """Pick the adapter for a loaded model from its ``config.model_type``."""
    family = getattr(model.config, "model_type", "")
    if family in GATED_FAMILIES:
        return Adapter(family, gated=True)
    if family in NON_GATED_FAMILIES:
        return Adapter(family, gated=False)
    raise UnsupportedArchitecture(
        f"model type '{family}' is not supported; supported: {', '.join(sorted(GATED_FAMILIES | NON_GATED_FAMILIES))}"
    )
