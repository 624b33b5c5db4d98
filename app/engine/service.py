"""The Engine facade: owns one loaded model and the lock around it; the only thing the web layer calls.

Hooks are global state on the model, so every public method runs under one re-entrant lock; callers
run it off the event loop. Results are plain JSON-able dicts (docs/CONTRACTS.md).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import torch
import transformers
from scipy.stats import spearmanr

from app.engine import ENGINE_VERSION, decode, nag
from app.engine import ablation as abl
from app.engine import impacts as imp
from app.engine.arch import adapter_for
from app.engine.errors import BadInput, Cancelled, NeuronOutOfRange, PromptTooLong, TargetNotSingleToken
from app.engine.hooks import capture, grad_from_embeddings
from app.engine.ids import Ablation, NeuronId
from app.engine.loading import Loaded, load
from app.engine.tiny import tiny_loaded

Progress = Callable[[str, float, str], None]
METHODS = ("magnitude", "attribution", "ig")


class Engine:
    """One model, its neurons, and every analysis the product offers on it."""

    def __init__(self, loaded: Loaded, *, max_prompt_tokens: int = 512):
        self.loaded = loaded
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.adapter = adapter_for(self.model)
        self.sites = self.adapter.sites(self.model)
        self.device = next(self.model.parameters()).device
        limit = getattr(self.model.config, "max_position_embeddings", None) or max_prompt_tokens
        self.max_prompt_tokens = min(max_prompt_tokens, limit)
        self.lock = threading.RLock()
        self._means: torch.Tensor | None = None
        self._baselines: OrderedDict[tuple, tuple[torch.Tensor, list[int]]] = OrderedDict()

    # ----- construction -------------------------------------------------------------------------
    @classmethod
    def load(cls, model: str | None = None, *, model_dir: Path, device: str = "auto", dtype: str = "auto",
             max_prompt_tokens: int = 512, allowlist: tuple[str, ...] = ()) -> Engine:
        """Load ``model`` (default: the embedded SmolLM2) from the model store."""
        return cls(load(model, model_dir=Path(model_dir), device=device, dtype=dtype, allowlist=allowlist),
                   max_prompt_tokens=max_prompt_tokens)

    @classmethod
    def tiny(cls, arch: str = "llama", seed: int = 0, **sizes) -> Engine:
        """A tiny seeded random model, for tests and demos without weights."""
        return cls(tiny_loaded(arch, seed, **sizes))

    @property
    def n_layers(self) -> int:
        return len(self.sites)

    @property
    def width(self) -> int:
        return self.adapter.write_vectors(self.sites[0]).shape[0]

    @property
    def info(self) -> dict:
        """The model facts every result records (its reproducibility record)."""
        return {"name": self.loaded.name, "weights_sha256": self.loaded.weights_sha256,
                "n_layers": self.n_layers, "neurons_per_layer": self.width, "arch": self.adapter.family,
                "gated": self.adapter.gated, "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
                "device": str(self.device), "vocab_size": len(self.tokenizer),
                "max_prompt_tokens": self.max_prompt_tokens, "torch": torch.__version__,
                "transformers": transformers.__version__, "engine_version": ENGINE_VERSION}

    # ----- input checks ---------------------------------------------------------------------------
    def encode(self, prompt: str) -> torch.Tensor:
        """[1, T] token ids; BadInput for an empty prompt, PromptTooLong past the limit."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadInput("the prompt is empty; type some text to analyse")
        ids = self.tokenizer(prompt, return_tensors="pt").input_ids
        if ids.shape[1] == 0:
            raise BadInput("the prompt encodes to no tokens; type some text to analyse")
        if ids.shape[1] > self.max_prompt_tokens:
            raise PromptTooLong(f"the prompt has {ids.shape[1]} tokens; the limit is {self.max_prompt_tokens}. "
                                "Shorten it or raise the limit (CIRCUITSCOPE_MAX_PROMPT_TOKENS)")
        return ids.to(self.device)

    def check_prompt(self, prompt: str) -> int:
        """Token count of a valid prompt (raises like ``encode``)."""
        return int(self.encode(prompt).shape[1])

    def token_id(self, text: str, role: str = "target") -> int:
        """The id of a one-token string; TargetNotSingleToken (with the pieces) otherwise."""
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            pieces = [self.tokenizer.decode([i]) for i in ids]
            hint = " (did you mean it with a leading space?)" if not text.startswith(" ") else ""
            raise TargetNotSingleToken(f"the {role} '{text}' is {len(ids)} tokens {pieces}, not one{hint}")
        return ids[0]

    def check_neuron(self, nid: NeuronId) -> NeuronId:
        """The id itself if the model has that neuron; NeuronOutOfRange saying the valid ranges otherwise."""
        if not (0 <= nid.layer < self.n_layers and 0 <= nid.index < self.width):
            raise NeuronOutOfRange(f"{nid} does not exist: this model has layers 0-{self.n_layers - 1} and "
                                   f"neurons 0-{self.width - 1} per layer")
        return nid

    # ----- analysis -------------------------------------------------------------------------------
    def analyze(self, prompt: str, *, target: str | None = None, contrast: str | None = None,
                method: str = "attribution", k: int = 5, ig_steps: int = 16, verify: int = 8, edges: bool = True,
                edge_window: int = 1, edge_top_in: int | None = 5, progress: Progress | None = None,
                should_cancel: Callable[[], bool] | None = None) -> dict:
        """Impacts of every neuron, the top-k NAG with edges, and a fidelity check (docs/CONTRACTS.md)."""
        if method not in METHODS:
            raise BadInput(f"method '{method}' is unknown; use one of {', '.join(METHODS)}")
        if not 1 <= k <= self.width:
            raise BadInput(f"k must be between 1 and {self.width}")
        step = _Steps(progress, should_cancel)
        with self.lock:
            return self._analyze(prompt, target, contrast, method, k, ig_steps, verify, edges,
                                 (edge_window, edge_top_in), step)

    def _analyze(self, prompt, target, contrast, method, k, ig_steps, verify, edges, edge_opts, step) -> dict:
        edge_window, edge_top_in = edge_opts
        started = time.perf_counter()
        step("tokenize", 0.0, "encoding the prompt")
        ids = self.encode(prompt)
        target_id = self.token_id(target) if target else None
        contrast_id = self.token_id(contrast, "contrast") if contrast else None
        step("forward", 0.05, "forward and backward pass over all neurons")
        local = edges and edge_window == 1 and self.adapter.plain_residual_write
        chosen_target, graph = self._graph_pass(ids, target_id, contrast_id, need_graph=edges, method=method,
                                                capture_io=local)
        metric = imp.Metric(chosen_target, contrast_id)
        impacts = self._impacts(method, ids, metric, graph, ig_steps, step)
        timings = {"impacts_s": time.perf_counter() - started}
        chosen = nag.top_nodes(impacts, k, signed=method != "magnitude")
        nodes = nag.node_rows(impacts, graph.last_acts, chosen)
        step("edges", 0.75, "edges between the top neurons of adjacent layers")
        t0 = time.perf_counter()
        if not edges:
            edge_rows = []
        elif local:
            edge_rows = nag.local_edges(graph.acts, graph.io, self.sites, self.adapter, chosen)
        else:
            edge_rows = nag.edges(graph.acts, chosen, window=edge_window)
        if edge_top_in is not None:  # keep the strongest incoming edges per node (the payload stays small)
            edge_rows = [row for row, keep in zip(edge_rows, nag.prune_mask(edge_rows, top_in=edge_top_in)) if keep]
        graph.release()
        timings["edges_s"] = time.perf_counter() - t0
        step("verify", 0.85, f"exact ablation of the top {verify} neurons")
        t0 = time.perf_counter()
        fidelity = self._fidelity(ids, metric, graph.metric, nodes, verify, method) if verify else None
        timings["verify_s"] = time.perf_counter() - t0
        timings["total_s"] = time.perf_counter() - started
        step("done", 1.0, "analysis complete")
        return self._analysis_dict(prompt, ids, method, k, metric, graph, impacts, nodes, edge_rows, fidelity,
                                   {"method": method, "k": k, "ig_steps": ig_steps, "verify": verify,
                                    "edges": edges, "edge_window": edge_window, "edge_top_in": edge_top_in},
                                   timings)

    def _graph_pass(self, ids, target_id, contrast_id, *, need_graph: bool, method: str,
                    capture_io: bool = False) -> tuple[int, _Graph]:
        """Forward with all a_l in the graph; backward to M when the method is attribution."""
        store: dict[int, torch.Tensor] = {}
        io: dict | None = {} if capture_io else None
        with torch.enable_grad(), grad_from_embeddings(self.model), \
                capture(self.sites, store=store, io_store=io):
            logits = imp.last_logits(self.model, ids)
        chosen_target = target_id if target_id is not None else int(logits[0].argmax())
        metric = imp.Metric(chosen_target, contrast_id)
        value = metric(logits)
        acts = [store[layer] for layer in range(self.n_layers)]
        grads = None
        if method == "attribution":
            grads = torch.autograd.grad(value.sum(), acts, retain_graph=need_graph)
        return chosen_target, _Graph(acts, grads, logits[0].detach().float(), float(value.item()), io)

    def _impacts(self, method: str, ids, metric, graph: _Graph, ig_steps: int, step: _Steps) -> torch.Tensor:
        if method == "attribution":
            return torch.stack([(a.detach() * g).sum(dim=(0, 1)) for a, g in zip(graph.acts, graph.grads)]).float()
        if method == "magnitude":
            return imp.magnitude(self.model, self.sites, ids)[0]
        return imp.integrated_gradients(
            self.model, self.sites, ids, metric, steps=ig_steps,
            on_layer=lambda done, total: step("integrated gradients", 0.05 + 0.7 * done / total,
                                              f"layer {done}/{total}, {ig_steps} steps"))

    def _fidelity(self, ids, metric, base: float, nodes: list[dict], verify: int, method: str) -> dict:
        """Exact single-neuron zero-ablation of the top ``verify`` nodes vs the first-order estimate."""
        top = sorted(nodes, key=lambda n: -abs(n["impact"]))[:verify]
        exact = imp.ablation_effects(self.model, self.sites, ids, metric, [NeuronId.parse(n["id"]) for n in top],
                                     base=base)
        rows = [{"id": n["id"], "estimate": -n["impact"] if method != "magnitude" else None, "exact": e}
                for n, e in zip(top, exact)]
        rho = None
        if method != "magnitude" and len(rows) >= 3:
            value = spearmanr([r["estimate"] for r in rows], exact).statistic
            rho = None if math.isnan(value) else float(value)  # NaN when a side is constant
        return {"spearman": rho, "n": len(rows), "exact": rows}

    def _analysis_dict(self, prompt, ids, method, k, metric, graph, impacts, nodes, edge_rows, fidelity, params,
                       timings) -> dict:
        probs = torch.softmax(graph.logits, dim=-1)
        info = self.info
        return {
            "kind": "analysis",
            "model": {key: info[key] for key in ("name", "weights_sha256", "n_layers", "neurons_per_layer", "arch")},
            "prompt": prompt, "tokens": self.token_strings(ids), "token_ids": ids[0].tolist(),
            "method": method, "k": k, "metric": metric.name,
            "target": {"token": self.tokenizer.decode([metric.target_id]), "id": metric.target_id,
                       "prob": float(probs[metric.target_id]),
                       "logprob": float(torch.log_softmax(graph.logits, -1)[metric.target_id])},
            "contrast": None if metric.contrast_id is None else
            {"token": self.tokenizer.decode([metric.contrast_id]), "id": metric.contrast_id},
            "metric_value": graph.metric,
            "top": self._top_tokens(probs, 10),
            "nodes": nodes, "edges": edge_rows,
            "layers": [{"layer": layer, "impact_abs_sum": float(impacts[layer].abs().sum()),
                        "impact_max": float(impacts[layer].abs().max())} for layer in range(self.n_layers)],
            "fidelity": fidelity, "params": params,
            "timings": {key: round(value, 4) for key, value in timings.items()},
            "repro": {key: info[key] for key in ("torch", "transformers", "engine_version", "dtype", "device")},
        }

    def token_strings(self, ids: torch.Tensor) -> list[str]:
        return [self.tokenizer.decode([i]) for i in ids[0].tolist()]

    def _top_tokens(self, probs: torch.Tensor, n: int) -> list[dict]:
        values, indices = probs.topk(n)
        return [{"token": self.tokenizer.decode([i]), "id": i, "prob": float(p)}
                for i, p in zip(indices.tolist(), values.tolist())]

    # ----- ablation -------------------------------------------------------------------------------
    def ablate(self, prompt: str, ablation: Ablation, *, target: str | None = None, contrast: str | None = None,
               continuation: int = 8) -> dict:
        """Baseline vs ablated: target probability, top-10, KL(baseline || ablated), greedy continuations."""
        for nid in ablation.neurons:
            self.check_neuron(nid)
        if not 0 <= continuation <= 64:
            raise BadInput("continuation must be between 0 and 64 tokens")
        with self.lock:
            ids = self.encode(prompt)
            if ablation.positions is not None and any(not 0 <= p < ids.shape[1] for p in ablation.positions):
                raise BadInput(f"ablation positions must lie in 0-{ids.shape[1] - 1} for this prompt")
            means = self.reference_means() if ablation.mode == "mean" else None
            target_id = self.token_id(target) if target else None
            base_logp, base_tokens = self._baseline(ids, continuation)
            logp, tokens = abl.run(self.model, self.sites, ids, ablation, means=means, continuation=continuation,
                                   eos_id=self.tokenizer.eos_token_id)
        tid = target_id if target_id is not None else int(base_logp.argmax())
        sides = {name: self._side(lp, toks, tid) for name, lp, toks in
                 (("baseline", base_logp, base_tokens), ("ablated", logp, tokens))}
        return {"kind": "ablation", "ablation": ablation.to_dict(),
                "target": {"token": self.tokenizer.decode([tid]), "id": tid}, **sides,
                "delta_prob": sides["ablated"]["target_prob"] - sides["baseline"]["target_prob"],
                "kl": abl.kl_divergence(base_logp, logp)}

    def _baseline(self, ids: torch.Tensor, continuation: int) -> tuple[torch.Tensor, list[int]]:
        """The clean run of a prompt, cached (LRU) so that each live ablation costs one forward."""
        key = (tuple(ids[0].tolist()), continuation)
        if key in self._baselines:
            self._baselines.move_to_end(key)
            return self._baselines[key]
        value = abl.run(self.model, self.sites, ids, None, means=None, continuation=continuation,
                        eos_id=self.tokenizer.eos_token_id)
        self._baselines[key] = value
        if len(self._baselines) > 64:
            self._baselines.popitem(last=False)
        return value

    def _side(self, logp: torch.Tensor, tokens: list[int], tid: int) -> dict:
        return {"target_prob": float(logp[tid].exp()), "target_logprob": float(logp[tid]),
                "top": self._top_tokens(logp.exp(), 10), "continuation": self.tokenizer.decode(tokens)}

    def reference_means(self) -> torch.Tensor:
        """Mean activation of every neuron over the shipped reference corpus: [L, d_ff].

        Computed once per model and corpus, and kept beside a local model's weights so that a restart
        does not pay for it again (keyed by the weights and the corpus text)."""
        with self.lock:
            if self._means is None:
                self._means = self._load_or_compute_means()
            return self._means

    def _load_or_compute_means(self) -> torch.Tensor:
        corpus = "\n".join(reference_corpus()).encode()
        tag = hashlib.sha256(self.loaded.weights_sha256.encode() + corpus).hexdigest()[:16]
        cache = self.loaded.path / ".circuitscope" / f"reference-means-{tag}.pt" if self.loaded.path else None
        if cache is not None and cache.is_file():
            return torch.load(cache, map_location=self.device)
        means = abl.reference_means(self.model, self.sites, self._reference_batches())
        if cache is not None:
            try:
                cache.parent.mkdir(exist_ok=True)
                partial = cache.with_suffix(".partial")
                torch.save(means.cpu(), partial)
                partial.replace(cache)  # atomic: a crash never leaves a truncated cache
            except OSError:
                pass
        return means

    def _reference_batches(self, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
        lines = [line for line in reference_corpus() if line.strip()]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        batches = []
        for start in range(0, len(lines), size):
            encoded = [self.tokenizer(text).input_ids[: self.max_prompt_tokens] for text in lines[start:start + size]]
            width = max(len(e) for e in encoded)
            ids = torch.tensor([e + [pad] * (width - len(e)) for e in encoded], device=self.device)
            mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in encoded], device=self.device)
            batches.append((ids, mask))
        return batches

    # ----- neurons --------------------------------------------------------------------------------
    def neuron(self, nid: NeuronId, *, top: int = 10) -> dict:
        """Top and bottom vocabulary tokens of the neuron's write and read vectors."""
        self.check_neuron(nid)
        with self.lock:
            views = decode.decode_neuron(self.model, self.adapter, self.sites[nid.layer], nid.index,
                                         self.tokenizer, top=top)
        return {"id": str(nid), "layer": nid.layer, "neuron": nid.index, **views}

    def neuron_activations(self, prompt: str, nid: NeuronId) -> dict:
        """The neuron's activation a(t) on every token of the prompt."""
        self.check_neuron(nid)
        with self.lock:
            ids = self.encode(prompt)
            store: dict[int, torch.Tensor] = {}
            with torch.no_grad(), capture(self.sites, store=store):
                self.model(input_ids=ids, use_cache=False)
            values = store[nid.layer][0, :, nid.index].float().tolist()
        return {"id": str(nid), "tokens": self.token_strings(ids), "activations": values}

    # ----- NeurFlow circuits ----------------------------------------------------------------------
    def circuit(self, prompt: str | list[str], *, target: str | None = None, contrast: str | None = None,
                tau: int = 16, k: int = 50, ig_steps: int = 16, fast: bool = False,
                layers: int | str | tuple[int, int] | None = None, max_neurons: int = 32, max_groups: int = 8,
                draws: int = 20, subsets: int = 40, corpus: list[str] | None = None, seed: int = 0,
                standardize: bool = True, progress: Progress | None = None,
                should_cancel: Callable[[], bool] | None = None) -> dict:
        """NeurFlow circuit (core neurons, sub-concepts, groups, group flow, fidelity) of one prompt or a
        prompt set over a layer window (app/engine/circuits.py)."""
        from app.engine import circuits

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or len(prompts) > 64:
            raise BadInput("give between 1 and 64 prompts")
        for name, value, low, high in (("tau", tau, 1, self.width), ("k", k, 2, 1000), ("ig_steps", ig_steps, 1, 256),
                                       ("max_neurons", max_neurons, 1, self.width), ("max_groups", max_groups, 2, 100),
                                       ("draws", draws, 20, 1000), ("subsets", subsets, 3, 2000)):
            if not isinstance(value, int) or not low <= value <= high:
                raise BadInput(f"{name} must be an integer between {low} and {high}")
        if corpus is not None and not [text for text in corpus if isinstance(text, str) and text.strip()]:
            raise BadInput("the reference corpus is empty; give at least one text, one per line")
        window = circuits.resolve_window(layers, self.n_layers)
        for layer in window:
            self.check_neuron(NeuronId(layer, 0))
        step = _Steps(progress, should_cancel)
        with self.lock:
            step("tokenize", 0.0, f"encoding {len(prompts)} prompt(s)")
            ids = [self.encode(p) for p in prompts]
            target_id = self.token_id(target) if target else None
            contrast_id = self.token_id(contrast, "contrast") if contrast else None
            texts = None if corpus is None else [t.strip() for t in corpus if isinstance(t, str) and t.strip()]
            return circuits.build(self, prompts, ids, target_id, contrast_id, tau=tau, k=k, ig_steps=ig_steps,
                                  fast=fast, window=window, max_neurons=max_neurons, max_groups=max_groups,
                                  draws=draws, subsets=subsets, corpus=texts, seed=seed, standardize=standardize,
                                  step=step)


class _Graph:
    """The analysis forward pass: activations (in the graph), optional gradients, logits, M."""

    def __init__(self, acts, grads, logits, metric, io=None):
        self.acts, self.grads, self.logits, self.metric, self.io = acts, grads, logits, metric, io
        self.last_acts = torch.stack([a.detach()[0, -1] for a in acts]).float()

    def release(self) -> None:
        """Drop the autograd graph as soon as edges no longer need it."""
        self.acts = [a.detach() for a in self.acts]
        self.io = None


class _Steps:
    """Reports progress and honours cancellation between phases."""

    def __init__(self, progress: Progress | None, should_cancel: Callable[[], bool] | None):
        self.progress, self.should_cancel = progress, should_cancel

    def __call__(self, phase: str, fraction: float, message: str) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled("the job was cancelled")
        if self.progress is not None:
            self.progress(phase, fraction, message)


def reference_corpus() -> list[str]:
    """The shipped reference corpus: varied English sentences, one per line."""
    return files("app.engine").joinpath("data/reference.txt").read_text(encoding="utf-8").splitlines()
