"""Side-by-side benchmark: CircuitScope vs raw transformers, TransformerLens and nnsight.

Every attribution contender computes the same thing: activation x gradient for all MLP neurons of all
layers (the input of ``down_proj``, i.e. ``act(gate) * up``; TransformerLens' ``blocks.{l}.mlp.hook_post``),
summed over positions, to the metric ``log p(target | prompt)`` at the last position, with one forward
and one backward, fp32 on the CPU. Each attribution vector is checked against a plain PyTorch-hooks
reference so that we compare like with like.

Run from the repository root::

    python bench/peers.py                       # tables on stdout
    python bench/peers.py --json bench/results.json --repeats 20

Timing is interleaved: all contenders are loaded first, then each round runs every contender once (in a
rotating order), so load from other processes on a shared machine hits all of them alike. Medians and
minima are both reported. nnsight patches ``torch.Tensor.backward`` globally on import; the raw
forward+backward is therefore also timed once before any peer is imported, to show the patch is free.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_MODEL_PATH = "models/SmolLM2-135M-Instruct"
OFFICIAL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_PROMPT = "The Eiffel Tower is a famous landmark in the heart of Paris, which is the capital city of"
MODEL_PATH_ENV = "CIRCUITSCOPE_BENCH_MODEL"
PEERS = ("transformerlens", "transformerlens_compat", "nnsight")

Attribution = torch.Tensor  # [n_layers, neurons_per_layer], summed over positions


# ----------------------------------------------------------------------------------------------------
# Small utilities
# ----------------------------------------------------------------------------------------------------


def resolve_model_path(arg: str | None) -> Path:
    """Pick the model directory: the argument, else $CIRCUITSCOPE_BENCH_MODEL, else the default.

    A relative path is tried against the working directory, then the repository root. When the
    default is missing (the engine has not prepared it yet) fall back to the converted copy in /tmp.
    """
    raw = arg or os.environ.get(MODEL_PATH_ENV) or DEFAULT_MODEL_PATH
    for candidate in (Path(raw), REPO_ROOT / raw):
        if (candidate / "config.json").is_file():
            return candidate.resolve()
    raise SystemExit(f"no model at '{raw}' (need a directory with config.json); run "
                     "`circuitscope models --prepare` or pass --model-path")


def pkg_version(name: str) -> str | None:
    """Installed version of a distribution, or None."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def log_prob(logits: torch.Tensor, target: int) -> torch.Tensor:
    """The metric: log p(target) at the last position of the (single) sequence."""
    return logits[0, -1].float().log_softmax(-1)[target]


def attribution_from(acts: list[torch.Tensor], grads: list[torch.Tensor]) -> Attribution:
    """Activation x gradient, summed over positions, stacked over layers -> [n_layers, n_neurons]."""
    return torch.stack([(a.detach() * g.detach())[0].sum(0) for a, g in zip(acts, grads)])


def compare(candidate: Attribution, reference: Attribution, top: int = 100) -> dict:
    """How closely an attribution matches the reference: abs/rel diff, Pearson r, top-|impact| overlap."""
    a, b = candidate.flatten().double(), reference.flatten().double()
    diff = (a - b).abs().max().item()
    pearson = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
    top_a = set(a.abs().topk(top).indices.tolist())
    top_b = set(b.abs().topk(top).indices.tolist())
    return {
        "max_abs_diff": diff,
        "rel_max_diff": diff / max(b.abs().max().item(), 1e-30),
        "pearson": pearson,
        f"top{top}_overlap": len(top_a & top_b) / top,
    }


# ----------------------------------------------------------------------------------------------------
# Interleaved timing
# ----------------------------------------------------------------------------------------------------


@dataclass
class Contender:
    """One timed operation: ``run()`` is called once per round."""

    name: str
    run: Callable[[], Any]
    load_s: float | None = None
    keep_outputs: bool = False
    times: list[float] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)

    def fastest_output(self) -> Any:
        """What the fastest timed run returned (needs ``keep_outputs``)."""
        return self.outputs[self.times.index(min(self.times))] if self.outputs else None

    def summary(self) -> dict:
        """Median/min/max seconds over the timed rounds (plus the load time when known)."""
        out = {
            "median_s": statistics.median(self.times),
            "min_s": min(self.times),
            "max_s": max(self.times),
            "repeats": len(self.times),
        }
        if self.load_s is not None:
            out["load_s"] = self.load_s
        return out


def time_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall-clock seconds of one call, and what it returned."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def time_interleaved(contenders: list[Contender], repeats: int, warmup: int) -> None:
    """Warm every contender up, then time ``repeats`` rounds, rotating who goes first each round."""
    for contender in contenders:
        for _ in range(warmup):
            contender.run()
    n = len(contenders)
    for round_ in range(repeats):
        for contender in contenders[round_ % n :] + contenders[: round_ % n]:
            seconds, out = time_once(contender.run)
            contender.times.append(seconds)
            if contender.keep_outputs:
                contender.outputs.append(out)


# ----------------------------------------------------------------------------------------------------
# Raw transformers: baselines and the plain-hooks reference
# ----------------------------------------------------------------------------------------------------


def load_hf(model_path: Path) -> torch.nn.Module:
    """A fresh fp32 copy of the HF causal LM in eval mode (each contender gets its own copy)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()


def freeze_for_attribution(model: torch.nn.Module) -> torch.nn.Module:
    """Freeze all weights and make the embedding output a grad leaf.

    Attribution needs gradients w.r.t. activations only; this skips the weight gradients that a
    default ``model(...)...backward()`` would also compute. Used for every attribution contender alike.
    """
    model.requires_grad_(False)
    model.get_input_embeddings().register_forward_hook(lambda _m, _i, out: out.requires_grad_(True))
    return model


def raw_forward(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """One plain forward without autograd (no KV cache)."""
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def raw_forward_backward(model: torch.nn.Module, ids: torch.Tensor, target: int) -> float:
    """One plain forward + backward of the metric; any weight grads are dropped afterwards."""
    metric = log_prob(model(input_ids=ids, use_cache=False).logits, target)
    metric.backward()
    model.zero_grad(set_to_none=True)
    return metric.item()


def reference_attribution(model: torch.nn.Module, ids: torch.Tensor, target: int) -> Attribution:
    """Plain PyTorch hooks: capture each down_proj input, retain its grad, one backward."""
    acts: list[torch.Tensor] = []

    def capture(_module: torch.nn.Module, args: tuple) -> None:
        args[0].retain_grad()
        acts.append(args[0])

    handles = [block.mlp.down_proj.register_forward_pre_hook(capture) for block in model.model.layers]
    try:
        log_prob(model(input_ids=ids, use_cache=False).logits, target).backward()
    finally:
        for handle in handles:
            handle.remove()
    return attribution_from(acts, [a.grad for a in acts])


def raw_contenders(model_path: Path, ids: torch.Tensor) -> tuple[list[Contender], Attribution, int]:
    """Raw forward, forward+backward with weight grads (HF default) and without; the reference.

    The target is the model's own top next token. Returns (contenders, reference attribution, target).
    """
    plain = load_hf(model_path)
    target = int(raw_forward(plain, ids)[0, -1].argmax())
    frozen = freeze_for_attribution(load_hf(model_path))
    contenders = [
        Contender("raw_fwd", lambda: raw_forward(plain, ids)),
        Contender("raw_fwd_bwd", lambda: raw_forward_backward(frozen, ids, target)),
        Contender("raw_fwd_bwd_weight_grads", lambda: raw_forward_backward(plain, ids, target)),
        Contender("reference_attribution", lambda: reference_attribution(frozen, ids, target)),
    ]
    return contenders, reference_attribution(frozen, ids, target), target


# ----------------------------------------------------------------------------------------------------
# CircuitScope engine (optional until app/engine/service.py lands)
# ----------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _engine(model_path: str) -> Any:
    """Load (once) the CircuitScope engine for a model directory; ImportError if it is not there."""
    from app.engine.service import Engine

    path = Path(model_path)
    return Engine.load(path.name, model_dir=path.parent, device="cpu", dtype="float32")


def circuitscope_attribution(model_path: Path | str, prompt: str, **analyze_kwargs: Any) -> dict:
    """CircuitScope's all-neuron attribution analysis of ``prompt`` (full analysis by default)."""
    engine = _engine(str(model_path))
    return engine.analyze(prompt, method="attribution", k=5, **analyze_kwargs)


def circuitscope_ablation(model_path: Path | str, prompt: str, continuation: int = 8) -> dict:
    """CircuitScope's live ablation (zeroing neuron L3.N5) on ``prompt``."""
    from app.engine.ids import Ablation, NeuronId

    ablation = Ablation(neurons=(NeuronId(3, 5),), mode="zero")
    return _engine(str(model_path)).ablate(prompt, ablation, continuation=continuation)


def engine_check(analysis: dict, reference: Attribution, ids: torch.Tensor, target: int) -> dict:
    """Compare the engine's reported node impacts with the reference at the same neurons."""
    if analysis.get("token_ids") != ids[0].tolist():
        return {"skipped": f"engine tokenized differently: {analysis.get('token_ids')}"}
    engine_target = (analysis.get("target") or {}).get("id")
    if engine_target != target:
        return {"skipped": f"engine chose target id {engine_target}, bench uses {target}"}
    nodes = analysis.get("nodes") or []
    if not nodes:
        return {"skipped": "engine returned no nodes"}
    est = torch.tensor([float(n["impact"]) for n in nodes], dtype=torch.float64)
    ref = torch.tensor([reference[n["layer"], n["neuron"]].item() for n in nodes], dtype=torch.float64)
    diff = (est - ref).abs().max().item()
    return {
        "n_nodes": len(nodes),
        "max_abs_diff": diff,
        "rel_max_diff": diff / max(ref.abs().max().item(), 1e-30),
    }


def engine_contenders(model_path: Path, prompt: str) -> tuple[list[Contender], str | None]:
    """Full analysis, impacts-only analysis, ablation (no continuation / 8 tokens), or why there are none."""
    try:
        load_s, _ = time_once(lambda: _engine(str(model_path)))
    except ImportError as exc:
        print(f"engine not available yet ({exc})", file=sys.stderr)
        return [], "engine not available yet"
    except Exception as exc:  # noqa: BLE001 - report an engine that fails to load, keep benchmarking peers
        print(f"engine failed to load: {type(exc).__name__}: {exc}", file=sys.stderr)
        return [], f"engine failed to load: {type(exc).__name__}: {exc}"
    contenders = [
        Contender(
            "circuitscope_analysis",
            lambda: circuitscope_attribution(model_path, prompt),
            load_s,
            keep_outputs=True,
        ),
        Contender(
            "circuitscope_nag",  # PRODUCT.md's "full analysis": impacts + NAG + edges, no exact-ablation check
            lambda: circuitscope_attribution(model_path, prompt, verify=0),
        ),
        Contender(
            "circuitscope_impacts",
            lambda: circuitscope_attribution(model_path, prompt, edges=False, verify=0),
        ),
        Contender("circuitscope_ablate", lambda: circuitscope_ablation(model_path, prompt, 0)),
        Contender("circuitscope_ablate_cont8", lambda: circuitscope_ablation(model_path, prompt, 8)),
    ]
    return contenders, None


# ----------------------------------------------------------------------------------------------------
# TransformerLens (4.x: TransformerBridge; HookedTransformer was removed in 4.0)
# ----------------------------------------------------------------------------------------------------


def load_transformerlens(model_path: Path, tokenizer: Any, compat: bool) -> Any:
    """Wrap a fresh HF copy in a TransformerBridge, offline (``hf_model=`` avoids any hub call).

    ``compat=True`` applies HookedTransformer-equivalent weight processing (fold_ln, centering).
    The bridge switches the wrapped model to eager attention in place, hence the private copy.
    """
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(
        OFFICIAL_NAME, hf_model=load_hf(model_path), tokenizer=tokenizer, device="cpu", dtype=torch.float32
    )
    if compat:
        bridge.enable_compatibility_mode(disable_warnings=True)
    freeze_for_attribution(bridge.original_model)
    return bridge


def transformerlens_attribution(bridge: Any, ids: torch.Tensor, target: int) -> Attribution:
    """TL idiom: forward hooks store ``hook_post``, backward hooks store its gradient.

    Stored by layer index: outside compatibility mode ``hook.name`` is the canonical bridge name
    (``blocks.{l}.mlp.out.hook_in``), not the ``hook_post`` alias we asked for.
    """
    n_layers = bridge.cfg.n_layers
    acts: list[Any] = [None] * n_layers
    grads: list[Any] = [None] * n_layers

    def store(into: list, layer: int) -> Callable:
        def hook_fn(tensor: torch.Tensor, hook: Any) -> None:
            into[layer] = tensor

        return hook_fn

    fwd = [(f"blocks.{layer}.mlp.hook_post", store(acts, layer)) for layer in range(n_layers)]
    bwd = [(f"blocks.{layer}.mlp.hook_post", store(grads, layer)) for layer in range(n_layers)]
    with bridge.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
        log_prob(bridge(ids), target).backward()
    return attribution_from(acts, grads)


# ----------------------------------------------------------------------------------------------------
# nnsight
# ----------------------------------------------------------------------------------------------------


def load_nnsight(model_path: Path, tokenizer: Any) -> Any:
    """Wrap a fresh HF copy for nnsight (TransformersModel in >=0.8, LanguageModel before)."""
    import nnsight

    model = freeze_for_attribution(load_hf(model_path))
    if hasattr(nnsight, "TransformersModel"):
        try:
            return nnsight.TransformersModel(model, task="text-generation", tokenizer=tokenizer)
        except AttributeError:
            pass
    return nnsight.LanguageModel(model, tokenizer=tokenizer)


def nnsight_attribution(lm: Any, ids: torch.Tensor, target: int) -> Attribution:
    """nnsight idiom: save every down_proj input, then read their ``.grad`` in a backward block.

    Containers are created before the trace: names first bound inside a trace body do not come back
    out to a function's locals in nnsight 0.8. Gradients must be read in reverse layer order.
    """
    acts: list[Any] = []
    grads: list[Any] = []
    with lm.trace(ids, use_cache=False):
        for layer in lm.model.layers:
            acts.append(layer.mlp.down_proj.input.save())
        metric = log_prob(lm.output.logits, target)
        with metric.backward():
            for act in reversed(acts):
                grads.append(act.grad.save())
    return attribution_from(acts, grads[::-1])


# ----------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------


def peer_loaders(model_path: Path, tokenizer: Any) -> dict[str, tuple[Callable[[], Any], Callable]]:
    """name -> (load, attribute(wrapped, ids, target)) for each peer library."""
    return {
        "transformerlens": (
            lambda: load_transformerlens(model_path, tokenizer, False),
            transformerlens_attribution,
        ),
        "transformerlens_compat": (
            lambda: load_transformerlens(model_path, tokenizer, True),
            transformerlens_attribution,
        ),
        "nnsight": (lambda: load_nnsight(model_path, tokenizer), nnsight_attribution),
    }


def peer_contender(
    name: str,
    load: Callable[[], Any],
    attribute: Callable,
    ids: torch.Tensor,
    target: int,
    reference: Attribution,
) -> tuple[Contender | None, dict]:
    """Load one peer and check its attribution; a failure is returned as ``{"error": ...}``."""
    try:
        start = time.perf_counter()
        wrapped = load()
        load_s = time.perf_counter() - start
        check = compare(attribute(wrapped, ids, target), reference)
        return Contender(name, lambda: attribute(wrapped, ids, target), load_s), check
    except Exception as exc:  # noqa: BLE001 - a peer failing is a result, not a crash
        message = f"{type(exc).__name__}: {exc}"
        print(f"{name} failed: {message}", file=sys.stderr)
        return None, {"error": message}


def ratio(timings: dict, num: str, den: str, stat: str) -> float | None:
    """timings[num][stat] / timings[den][stat], or None when either is missing."""
    a, b = timings.get(num, {}).get(stat), timings.get(den, {}).get(stat)
    return a / b if a and b else None


RATIOS = [
    ("impacts + NAG + edges / raw fwd+bwd (target <= 1.5)", "circuitscope_nag", "raw_fwd_bwd"),
    ("analysis + 8 exact checks / raw fwd+bwd", "circuitscope_analysis", "raw_fwd_bwd"),
    ("analysis + 8 exact checks / raw fwd+bwd, weight grads", "circuitscope_analysis", "raw_fwd_bwd_weight_grads"),
    ("impacts only / raw fwd+bwd", "circuitscope_impacts", "raw_fwd_bwd"),
    ("ablation / raw fwd (target <= 1.3)", "circuitscope_ablate", "raw_fwd"),
    ("ablation + 8-token continuation / raw fwd", "circuitscope_ablate_cont8", "raw_fwd"),
    ("TransformerLens / CircuitScope impacts", "transformerlens", "circuitscope_impacts"),
    ("TransformerLens / CircuitScope analysis", "transformerlens", "circuitscope_analysis"),
    ("nnsight / CircuitScope impacts", "nnsight", "circuitscope_impacts"),
    ("nnsight / CircuitScope analysis", "nnsight", "circuitscope_analysis"),
    ("plain-hooks reference / raw fwd+bwd", "reference_attribution", "raw_fwd_bwd"),
    ("TransformerLens / plain-hooks reference", "transformerlens", "reference_attribution"),
    ("TransformerLens compat / plain-hooks reference", "transformerlens_compat", "reference_attribution"),
    ("nnsight / plain-hooks reference", "nnsight", "reference_attribution"),
]


def print_header(results: dict) -> None:
    """Setup line, a warning when other processes loaded the CPU, the engine's phase split."""
    info = results["setup"]
    print(
        f"\nmodel {info['model_path']}  prompt {info['n_tokens']} tokens  target {info['target']!r}  "
        f"threads {info['torch_threads']}  torch {info['versions']['torch']}  "
        f"{info['repeats']} interleaved rounds after {info['warmup']} warm-up"
    )
    load, cpus = max(info["loadavg_1min"].values()), info["cpu_count"] or 1
    if load > cpus:
        print(
            f"WARNING: load average reached {load:.1f} on {cpus} CPUs: other processes competed for the CPU; "
            "medians are inflated, trust the minima"
        )
    phases = results["timings"].get("circuitscope_analysis", {}).get("engine_timings_fastest")
    if phases:
        split = ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in phases.items())
        print(f"engine phases of its fastest analysis: {split}")


def print_timings(timings: dict) -> None:
    """Absolute times per contender."""
    print(f"\n{'contender':34} {'median ms':>10} {'min ms':>9} {'max ms':>9} {'load s':>7}")
    for name, t in timings.items():
        if "error" in t:
            print(f"{name:34} {t['error']}")
            continue
        load = f"{t['load_s']:7.2f}" if "load_s" in t else ""
        ms = [f"{t[key] * 1e3:{width}.1f}" for key, width in (("median_s", 10), ("min_s", 9), ("max_s", 9))]
        print(f"{name:34} {' '.join(ms)} {load:>7}")


def print_ratios(ratios: dict) -> None:
    """Ratios of medians and of minima."""
    print(f"\n{'ratio':48} {'medians':>8} {'minima':>8}")
    for label, value in ratios.items():
        cells = ["     n/a" if v is None else f"{v:8.2f}" for v in (value["median"], value["min"])]
        print(f"{label:48} {cells[0]} {cells[1]}")


def print_correctness(correctness: dict) -> None:
    """Agreement of each attribution with the plain-hooks reference."""
    columns = f"{'max|diff|':>10} {'rel':>9} {'pearson':>10} {'top100':>7}"
    print(f"\n{'attribution vs plain-hooks reference':34} {columns}")
    for name, c in correctness.items():
        if "skipped" in c or "error" in c:
            print(f"{name:34} {c.get('skipped') or c.get('error')}")
            continue
        diffs = f"{c['max_abs_diff']:10.2e} {c['rel_max_diff']:9.1e}"
        if "pearson" in c:
            print(f"{name:34} {diffs} {c['pearson']:10.6f} {c['top100_overlap']:7.2f}")
        else:
            print(f"{name:34} {diffs}   ({c['n_nodes']} top nodes)")


def print_report(results: dict) -> None:
    """Human-readable tables: absolute times, ratios, correctness."""
    print_header(results)
    print_timings(results["timings"])
    print_ratios(results["ratios"])
    print_correctness(results["correctness"])


def setup_info(
    args: argparse.Namespace, model_path: Path, ids: torch.Tensor, target: int, tokenizer: Any
) -> dict:
    """Environment and input description recorded with the results."""
    packages = ("torch", "transformers", "transformer-lens", "nnsight")
    return {
        "model_path": str(model_path),
        "prompt": args.prompt,
        "n_tokens": int(ids.shape[1]),
        "target": tokenizer.decode([target]),
        "target_id": target,
        "dtype": "float32",
        "device": "cpu",
        "repeats": args.repeats,
        "warmup": args.warmup,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: pkg_version(p) for p in packages},
    }


def run(args: argparse.Namespace) -> dict:
    """The whole benchmark; returns the JSON-able results."""
    from transformers import AutoTokenizer

    load_before = os.getloadavg()
    model_path = resolve_model_path(args.model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    ids = tokenizer(args.prompt, return_tensors="pt").input_ids
    contenders, reference, target = raw_contenders(model_path, ids)
    raw_fwd_bwd = next(c for c in contenders if c.name == "raw_fwd_bwd")
    pre_import = Contender("raw_fwd_bwd_before_peer_imports", raw_fwd_bwd.run)
    time_interleaved([pre_import], args.repeats, args.warmup)
    engine, engine_error = engine_contenders(model_path, args.prompt)
    contenders += engine

    timings: dict = {"circuitscope": {"error": engine_error}} if engine_error else {}
    correctness: dict = {}
    for name, (load, attribute) in peer_loaders(model_path, tokenizer).items():
        if name in args.skip:
            continue
        contender, correctness[name] = peer_contender(name, load, attribute, ids, target, reference)
        if contender is None:
            timings[name] = correctness[name]
        else:
            contenders.append(contender)
    if engine:
        correctness["circuitscope"] = engine_check(
            circuitscope_attribution(model_path, args.prompt), reference, ids, target
        )

    time_interleaved(contenders, args.repeats, args.warmup)
    timings = {c.name: c.summary() for c in [pre_import, *contenders]} | timings
    if engine:
        fastest = engine[0].fastest_output()
        timings["circuitscope_analysis"]["engine_timings_fastest"] = fastest.get("timings")
    setup = setup_info(args, model_path, ids, target, tokenizer)
    setup["loadavg_1min"] = {"start": load_before[0], "end": os.getloadavg()[0]}
    return {
        "setup": setup,
        "timings": timings,
        "ratios": {
            label: {"median": ratio(timings, n, d, "median_s"), "min": ratio(timings, n, d, "min_s")}
            for label, n, d in RATIOS
        },
        "correctness": correctness,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model-path",
        default=None,
        help=f"model directory (default ${MODEL_PATH_ENV} or {DEFAULT_MODEL_PATH})",
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--repeats", type=int, default=15, help="timed interleaved rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per contender before timing")
    parser.add_argument("--skip", nargs="*", default=[], choices=PEERS, help="peers to leave out")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    args = parse_args(argv)
    results = run(args)
    print_report(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
