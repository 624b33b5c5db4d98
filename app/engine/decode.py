"""What a neuron reads and writes, in vocabulary terms (logit lens on weights).

Davies 2025 ("Flash Interpretability", arXiv 2501.02688; ALGORITHMS.md 6) decodes up-projection rows
through the LM head. We show three views per neuron, each through the final norm's gain γ and the
unembedding W_U: ``write`` = W_U(γ ⊙ W_down[:, k]) (Geva-style; what the neuron pushes towards when it
fires positively), ``read_up`` = W_U(γ ⊙ W_up[k, :]) and, for gated (SwiGLU) MLPs, ``read_gate``.
Top *and* bottom tokens are shown: a SiLU-gated neuron's activation can be negative, flipping its effect.
"""

from __future__ import annotations

import torch

from app.engine.arch import Adapter, MlpSite


def _logits(vectors: torch.Tensor, gain: torch.Tensor, unembed: torch.Tensor) -> torch.Tensor:
    """[n, d_model] -> [n, vocab] through γ and W_U."""
    return (vectors.float() * gain.float()) @ unembed.float().T


def _tokens(tokenizer, ids: list[int], scores: list[float]) -> list[dict]:
    return [{"token": tokenizer.decode([i]), "id": i, "score": round(s, 4)} for i, s in zip(ids, scores)]


def _view(tokenizer, logits: torch.Tensor, top: int) -> dict:
    hi = logits.topk(top)
    lo = (-logits).topk(top)
    return {"top": _tokens(tokenizer, hi.indices.tolist(), hi.values.tolist()),
            "bottom": _tokens(tokenizer, lo.indices.tolist(), (-lo.values).tolist())}


def decode_neuron(model, adapter: Adapter, site: MlpSite, index: int, tokenizer, *, top: int = 10) -> dict:
    """The write / read_up / read_gate views of one neuron: top and bottom tokens with scores."""
    gain, unembed = adapter.final_gain(model), adapter.unembedding(model)
    views = {"write": adapter.write_vectors(site)[index], "read_up": adapter.read_vectors(site, "up")[index]}
    if adapter.gated:
        views["read_gate"] = adapter.read_vectors(site, "gate")[index]
    with torch.no_grad():
        out = {name: _view(tokenizer, _logits(vec[None], gain, unembed)[0], top) for name, vec in views.items()}
    out.setdefault("read_gate", None)
    return out


def decode_layer(model, adapter: Adapter, site: MlpSite, tokenizer, *, view: str = "write", top: int = 5,
                 chunk: int = 256) -> list[list[str]]:
    """Top tokens of every neuron of a layer for one view, chunked to bound memory (d_ff x vocab)."""
    vectors = adapter.write_vectors(site) if view == "write" else adapter.read_vectors(site, view.split("_")[-1])
    gain, unembed = adapter.final_gain(model), adapter.unembedding(model)
    rows: list[list[str]] = []
    with torch.no_grad():
        for start in range(0, vectors.shape[0], chunk):
            ids = _logits(vectors[start:start + chunk], gain, unembed).topk(top, dim=1).indices.tolist()
            rows.extend([tokenizer.decode([i]) for i in row] for row in ids)
    return rows
