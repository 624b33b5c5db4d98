import torch

from app.engine.decode import decode_layer
from app.engine.ids import NeuronId


def test_write_view_is_unembedding_of_gain_times_down_column(tiny):
    result = tiny.neuron(NeuronId(2, 17), top=5)
    site = tiny.sites[2]
    gain = tiny.model.get_decoder().norm.weight
    logits = tiny.model.lm_head.weight @ (site.down.weight[:, 17] * gain)
    assert [t["id"] for t in result["write"]["top"]] == logits.topk(5).indices.tolist()
    assert [t["id"] for t in result["write"]["bottom"]] == (-logits).topk(5).indices.tolist()
    up_logits = tiny.model.lm_head.weight @ (site.up.weight[17] * gain)
    assert [t["id"] for t in result["read_up"]["top"]] == up_logits.topk(5).indices.tolist()
    assert result["read_gate"] is not None and len(result["read_gate"]["top"]) == 5


def test_non_gated_models_have_no_gate_view(tiny_gpt2):
    assert tiny_gpt2.neuron(NeuronId(0, 0))["read_gate"] is None


def test_decode_whole_layer_matches_single_neurons(tiny):
    rows = decode_layer(tiny.model, tiny.adapter, tiny.sites[1], tiny.tokenizer, top=3, chunk=7)
    assert len(rows) == tiny.width
    for index in (0, 13, 63):
        single = tiny.neuron(NeuronId(1, index), top=3)["write"]["top"]
        assert rows[index] == [t["token"] for t in single]
    assert torch.is_tensor(tiny.sites[1].down.weight)
