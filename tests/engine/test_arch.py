"""Each adapter finds the neurons of its family on a tiny seeded model built from a config."""

import pytest
import torch

from app.engine.arch import adapter_for
from app.engine.hooks import capture
from app.engine.tiny import FAMILIES, tiny_loaded


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_hook_point_is_the_mlp_hidden_layer(family):
    loaded = tiny_loaded(family, seed=1)
    model, adapter = loaded.model, adapter_for(loaded.model)
    sites = adapter.sites(model)
    assert len(sites) == 3
    ids = loaded.tokenizer("the cat is big", return_tensors="pt").input_ids
    acts, ups = {}, {}
    mlp_in = {}
    handle = sites[1].up.register_forward_pre_hook(lambda m, args: mlp_in.__setitem__("x", args[0]))
    try:
        with torch.no_grad(), capture(sites, store=acts, up_store=ups):
            model(input_ids=ids)
    finally:
        handle.remove()
    x = mlp_in["x"]
    mlp = sites[1]
    if adapter.gated:
        act = model.get_decoder().layers[1].mlp.act_fn  # silu for Llama, tanh-gelu for Gemma
        expected = act(mlp.gate(x)) * mlp.up(x)
    else:
        layer = (model.transformer.h if family == "gpt2" else model.get_decoder().layers)[1].mlp
        act = getattr(layer, "act", None) or layer.activation_fn
        expected = act(mlp.up(x))
    torch.testing.assert_close(acts[1], expected)
    torch.testing.assert_close(ups[1], mlp.up(x))
    width = acts[0].shape[-1]
    assert adapter.write_vectors(sites[0]).shape == (width, 32)
    assert adapter.read_vectors(sites[0]).shape[0] == width


@pytest.mark.parametrize("family", FAMILIES)
def test_write_vectors_are_what_one_unit_of_activation_adds(family):
    loaded = tiny_loaded(family, seed=2)
    adapter = adapter_for(loaded.model)
    site = adapter.sites(loaded.model)[0]
    width = adapter.write_vectors(site).shape[0]
    one_hot = torch.zeros(1, width)
    one_hot[0, 7] = 1.0
    bias = getattr(site.down, "bias", None)
    with torch.no_grad():
        out = site.down(one_hot) - (bias if bias is not None else 0)
    torch.testing.assert_close(out[0], adapter.write_vectors(site)[7])
