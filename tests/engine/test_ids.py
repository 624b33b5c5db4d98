import pytest

from app.engine.errors import BadInput
from app.engine.ids import Ablation, NeuronId, parse_neuron_list


def test_neuron_id_round_trip():
    nid = NeuronId(3, 1207)
    assert str(nid) == "L3.N1207"
    assert NeuronId.parse("L3.N1207") == nid
    assert NeuronId.parse(" L0.N0 ") == NeuronId(0, 0)


@pytest.mark.parametrize("text", ["", "L3", "3.1207", "L-1.N2", "l3.n5", "L3.N", "L3.N5x", None])
def test_bad_neuron_ids_say_the_expected_form(text):
    with pytest.raises(BadInput, match="L<layer>.N<index>"):
        NeuronId.parse(text)


def test_neuron_list_sorted_and_deduplicated():
    assert parse_neuron_list("L5.N77,L3.N1207,L5.N77") == (NeuronId(3, 1207), NeuronId(5, 77))
    with pytest.raises(BadInput):
        parse_neuron_list(" , ")


def test_ablation_is_canonical_data():
    a = Ablation((NeuronId(5, 1), NeuronId(3, 2)), mode="zero", factor=3.0)
    b = Ablation.from_dict({"neurons": ["L3.N2", "L5.N1"], "mode": "zero"})
    assert a == b and a.key() == b.key() and hash(a) == hash(b)
    assert a.factor == 0.0  # the factor only matters for scale
    assert Ablation.from_dict(a.to_dict()) == a
    scaled = Ablation((NeuronId(3, 2),), mode="scale", factor=2.0)
    assert scaled.key() != a.key()
    with pytest.raises(BadInput, match="unknown"):
        Ablation((NeuronId(3, 2),), mode="explode")
