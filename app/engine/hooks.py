"""Scoped hooks on the MLP hidden layer: capture activations, or rewrite them (ablation, IG scaling).

Hooks are global mutable state on the model, so every hook lives inside a context manager whose
``finally`` removes it, even when the forward pass raises (TransformerLens ``hooks()`` does the same).
All hooks sit on one point per layer: a forward-pre-hook on the MLP output projection, whose input is
the neuron activation ``a_l`` [batch, tokens, d_ff].
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from app.engine.arch import MlpSite

Rewrite = Callable[[int, torch.Tensor], torch.Tensor]


@contextmanager
def hooked(handles_factory: Callable[[], list]) -> Iterator[None]:
    """Register the handles the factory returns; remove every one of them on exit, error or not."""
    handles: list = []
    try:
        handles = handles_factory()
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture(sites: list[MlpSite], *, store: dict[int, torch.Tensor], up_store: dict[int, torch.Tensor] | None = None,
            io_store: dict[tuple[str, int], torch.Tensor] | None = None):
    """Record ``a_l`` (input of the output projection) per layer into ``store``; optionally the
    pre-activation ``up``/``fc`` output into ``up_store`` (the NAG paper's neuron, ALGORITHMS.md 1.1), and
    into ``io_store`` each block's input (``("block", l)``) and MLP input (``("mlp", l)``)."""

    def factory() -> list:
        handles = []
        for layer, site in enumerate(sites):
            handles.append(site.down.register_forward_pre_hook(_capture_pre(layer, store)))
            if up_store is not None:
                handles.append(site.up.register_forward_hook(_capture_out(layer, up_store)))
            if io_store is not None:
                handles.append(site.up.register_forward_pre_hook(_capture_pre(("mlp", layer), io_store)))
                handles.append(site.block.register_forward_pre_hook(_capture_block(layer, io_store), with_kwargs=True))
        return handles

    with hooked(factory):
        yield


def _capture_pre(layer, store: dict) -> Callable:
    def hook(_module: nn.Module, args: tuple) -> None:
        store[layer] = args[0]

    return hook


def _capture_block(layer: int, store: dict) -> Callable:
    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        store[("block", layer)] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    return hook


def _capture_out(layer: int, store: dict) -> Callable:
    def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        store[layer] = output

    return hook


@contextmanager
def rewrite(sites: list[MlpSite], fn: Rewrite | None, layers: list[int] | None = None):
    """Replace ``a_l`` by ``fn(layer, a_l)`` on the given layers (all when None) for every forward inside;
    ``fn=None`` installs nothing (a clean run through the same code path)."""

    def factory() -> list:
        if fn is None:
            return []
        chosen = range(len(sites)) if layers is None else layers
        return [sites[layer].down.register_forward_pre_hook(_rewrite_pre(layer, fn)) for layer in chosen]

    with hooked(factory):
        yield


def _rewrite_pre(layer: int, fn: Rewrite) -> Callable:
    def hook(_module: nn.Module, args: tuple) -> tuple:
        return (fn(layer, args[0]), *args[1:])

    return hook


@contextmanager
def grad_from_embeddings(model: nn.Module):
    """Make the input embeddings require grad, so every ``a_l`` is in the autograd graph while the
    weights stay frozen (no weight gradients are ever computed)."""

    def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output.detach().requires_grad_(True)

    with hooked(lambda: [model.get_input_embeddings().register_forward_hook(hook)]):
        yield
