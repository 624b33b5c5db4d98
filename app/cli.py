"""``circuitscope`` command line: serve | models | analyze | ablate | neuron.

The CLI calls the engine directly (no server needed). ``--json`` prints one JSON object, the contract
other tools rely on (docs/CONTRACTS.md). Bad input exits with status 2 and one clear sentence.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _settings():
    from app.settings import Settings

    return Settings()


def _engine(args):
    from app.engine.service import Engine

    settings = _settings()
    return Engine.load(args.model or settings.model, model_dir=Path(settings.model_dir), device=args.device or settings.device,
                       dtype=args.dtype or settings.dtype, max_prompt_tokens=settings.max_prompt_tokens,
                       allowlist=tuple(settings.model_allowlist))


def _bar(enabled: bool):
    """A tqdm progress bar fed by the engine's progress callback (phases as the description)."""
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=100, bar_format="{desc:<40} {bar} {percentage:3.0f}%", file=sys.stderr)

    def update(phase: str, fraction: float, message: str) -> None:
        bar.set_description_str(f"{phase}: {message}"[:40])
        bar.n = int(fraction * 100)
        bar.refresh()

    return update, bar.close


def cmd_models(args) -> int:
    from app.engine.loading import list_models, prepare_default

    model_dir = Path(_settings().model_dir)
    if args.prepare:
        path = prepare_default(model_dir)
        engine = _engine(argparse.Namespace(model=path.name, device=None, dtype=None))
        engine.reference_means()  # cached beside the weights: mean-ablation is instant later
        print(f"default model ready in {path}", file=sys.stderr)
    rows = list_models(model_dir)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            state = "ready" if row["prepared"] else "embedded (prepared on first use)"
            print(f"{row['name']:<32} {state:<34} {row['path']}")
    return 0


def cmd_analyze(args) -> int:
    engine = _engine(args)
    progress, close = _bar(not args.json and not args.quiet)
    try:
        result = engine.analyze(args.prompt, target=args.target, contrast=args.contrast, method=args.method,
                                k=args.k, ig_steps=args.ig_steps, verify=args.verify, edges=not args.no_edges,
                                progress=progress)
    finally:
        close()
    if args.graphml:
        from app.engine.nag import to_graphml

        Path(args.graphml).write_text(to_graphml(result), encoding="utf-8")
    print(json.dumps(result) if args.json else _analysis_text(result))
    return 0


def _analysis_text(result: dict) -> str:
    target = result["target"]
    lines = [f"model {result['model']['name']}  method {result['method']}  k {result['k']}",
             f"prediction {target['token']!r} p={target['prob']:.3f}", "top nodes (by |impact|):"]
    for node in sorted(result["nodes"], key=lambda n: -abs(n["impact"]))[:15]:
        lines.append(f"  {node['id']:<12} impact {node['impact']:+.4f}  activation {node['activation']:+.3f}")
    fid = result.get("fidelity") or {}
    if fid.get("spearman") is not None:
        lines.append(f"fidelity: Spearman(attribution, exact ablation) = {fid['spearman']:.2f} over {fid['n']} neurons")
    lines.append(f"{len(result['edges'])} edges; {result['timings']['total_s']:.2f} s")
    return "\n".join(lines)


def cmd_ablate(args) -> int:
    from app.engine.ids import Ablation, parse_neuron_list

    ablation = Ablation(parse_neuron_list(args.neurons), mode=args.mode, factor=args.factor)
    result = _engine(args).ablate(args.prompt, ablation, target=args.target, continuation=args.continuation)
    if args.json:
        print(json.dumps(result))
        return 0
    for side in ("baseline", "ablated"):
        row = result[side]
        tops = ", ".join(f"{t['token']!r} {t['prob']:.3f}" for t in row["top"][:5])
        print(f"{side:<9} p({result['target']['token']!r}) = {row['target_prob']:.4f}   top: {tops}")
        print(f"{'':<9} continuation: {row['continuation']!r}")
    print(f"delta p = {result['delta_prob']:+.4f}   KL(baseline || ablated) = {result['kl']:.4f}")
    return 0


def cmd_neuron(args) -> int:
    from app.engine.ids import NeuronId

    result = _engine(args).neuron(NeuronId.parse(args.neuron), top=args.top)
    if args.json:
        print(json.dumps(result))
        return 0
    for view in ("write", "read_up", "read_gate"):
        if result.get(view):
            top = " ".join(repr(t["token"]) for t in result[view]["top"])
            bottom = " ".join(repr(t["token"]) for t in result[view]["bottom"])
            print(f"{result['id']} {view:<9} top: {top}\n{'':<{len(result['id'])}} {'':<9} bottom: {bottom}")
    return 0


def cmd_circuit(args) -> int:
    from app.engine.circuits import read_texts
    from app.engine.errors import BadInput

    prompts = ([args.prompt] if args.prompt else []) + (read_texts(args.prompts) if args.prompts else [])
    if not prompts:
        raise BadInput("give a PROMPT or --prompts FILE (one prompt per line, or JSON Lines with a 'text' field)")
    corpus = read_texts(args.corpus) if args.corpus else None
    engine = _engine(args)
    progress, close = _bar(not args.json and not args.quiet)
    try:
        result = engine.circuit(prompts if len(prompts) > 1 else prompts[0], target=args.target,
                                contrast=args.contrast, tau=args.tau, k=args.k, ig_steps=args.ig_steps,
                                fast=args.fast, layers=args.layers, max_neurons=args.max_neurons,
                                max_groups=args.max_groups, draws=args.draws, corpus=corpus, seed=args.seed,
                                progress=progress)
    finally:
        close()
    print(json.dumps(result) if args.json else _circuit_text(result))
    return 0


def _circuit_text(result: dict) -> str:
    params = result["params"]
    first = result["prompts"][0]["target"]
    header = (f"model {result['model']['name']}  {params['method']}  tau {params['tau']}  k {params['k']}  "
              f"layers {params['layers'][0]}-{params['layers'][1]}  {len(result['prompts'])} prompt(s)")
    lines = [header, f"root: {result['metric']} of {first['token']!r} (p={first['prob']:.3f})"]
    for layer in result["layers"]:
        lines.append(f"layer {layer['layer']}: {layer['critical']} critical neurons "
                     f"(coverage {layer['coverage']:.0%}), {len(layer['groups'])} groups")
        for group in (g for g in result["groups"] if g["layer"] == layer["layer"]):
            feeds = sorted((e for e in result["group_edges"] if e["source"] == group["id"]),
                           key=lambda e: -abs(e["weight"]))[:2]
            sample = group["samples"][0] if group["samples"] else None
            shown = f"  e.g. {sample['token']!r} in {sample['text'][:48]!r}" if sample else ""
            writes = " ".join(repr(t["token"]) for t in group["writes"]["top"][:4])
            flow = ", ".join(f"{e['target']} {e['weight']:+.2f}" for e in feeds)
            lines.append(f"  {group['id']:<8} importance {group['importance']:.3f}  {len(group['neurons'])} neurons  "
                         f"-> {flow or '-'}\n           writes {writes}{shown}")
    together = next(row for row in result["fidelity"]["ablation"] if row["layer"] == "all")
    rand = together["random"]
    lines.append(f"fidelity: zeroing the {together['n']} circuit neurons changes p by {together['core']['delta_prob']:+.3f}"
                 f" (random sets: {rand['delta_prob_mean']:+.3f} +/- {rand['delta_prob_std']:.3f}, "
                 f"{rand['draws']} draws)")
    corr = result["fidelity"]["correlation"]["root"]
    if corr["spearman"] is not None:
        lines.append(f"          importance vs ablation effect over {corr['subsets']} random subsets: "
                     f"Spearman {corr['spearman']:.2f}, Pearson {corr['pearson']:.2f}")
    stability = result["fidelity"]["stability"]
    if stability:
        lines.append(f"          over {stability['prompts']} prompts: {len(stability['stable'])} stable, "
                     f"{len(stability['specific'])} prompt-specific neurons/groups")
    lines.append(f"{len(result['groups'])} groups, {len(result['neurons'])} neurons, {len(result['edges'])} edges; "
                 f"{result['timings']['total_s']:.2f} s")
    return "\n".join(lines)


def cmd_serve(args) -> int:
    from app.engine.loading import resolve
    from app.main import serve

    overrides = {key: value for key, value in (("host", args.host), ("port", args.port), ("model", args.model))
                 if value is not None}
    settings = _settings().model_copy(update=overrides)
    resolve(settings.model, Path(settings.model_dir), tuple(settings.model_allowlist))  # fail fast, one sentence
    serve(settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="circuitscope", description="Explore neuron circuits in causal LMs.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the web app")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--model")
    serve.set_defaults(func=cmd_serve)

    models = sub.add_parser("models", help="list models in the model store")
    models.add_argument("--prepare", action="store_true", help="convert the embedded default model now")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    def model_args(p):
        p.add_argument("--model", help="model name in the model store (default: the embedded SmolLM2)")
        p.add_argument("--device", help="auto | cpu | cuda | mps")
        p.add_argument("--dtype", help="auto | float32 | bfloat16")
        p.add_argument("--json", action="store_true", help="print one JSON object")

    analyze = sub.add_parser("analyze", help="neuron impacts, NAG and edges for a prompt")
    analyze.add_argument("prompt")
    analyze.add_argument("--target", help="target token (default: the model's top next token)")
    analyze.add_argument("--contrast", help="contrast token: M = logit(target) - logit(contrast)")
    analyze.add_argument("--method", choices=("magnitude", "attribution", "ig"), default="attribution")
    analyze.add_argument("--k", type=int, default=5, help="nodes per layer")
    analyze.add_argument("--ig-steps", type=int, default=16)
    analyze.add_argument("--verify", type=int, default=8, help="verify the top n by exact ablation")
    analyze.add_argument("--no-edges", action="store_true")
    analyze.add_argument("--graphml", help="also write the NAG as GraphML to this file")
    analyze.add_argument("--quiet", action="store_true", help="no progress bar")
    model_args(analyze)
    analyze.set_defaults(func=cmd_analyze)

    ablate = sub.add_parser("ablate", help="baseline vs ablated prediction")
    ablate.add_argument("prompt")
    ablate.add_argument("--neurons", required=True, help="comma list, e.g. L3.N1207,L5.N77")
    ablate.add_argument("--mode", choices=("zero", "mean", "scale"), default="zero")
    ablate.add_argument("--factor", type=float, default=0.0, help="multiplier for --mode scale")
    ablate.add_argument("--target")
    ablate.add_argument("--continuation", type=int, default=8)
    model_args(ablate)
    ablate.set_defaults(func=cmd_ablate)

    circuit = sub.add_parser("circuit", help="NeurFlow circuit: core neurons, groups and their flow")
    circuit.add_argument("prompt", nargs="?", help="the prompt (or use --prompts)")
    circuit.add_argument("--prompts", help="file of prompts sharing the behaviour: one per line, or .jsonl")
    circuit.add_argument("--target", help="target token (default: each prompt's top next token)")
    circuit.add_argument("--contrast", help="contrast token: the root is logit(target) - logit(contrast)")
    circuit.add_argument("--tau", type=int, default=16, help="core neurons per critical neuron")
    circuit.add_argument("--k", type=int, default=50, help="concept samples per neuron")
    circuit.add_argument("--ig-steps", type=int, default=16)
    circuit.add_argument("--layers", help="window LO-HI (e.g. 24-29) or a count of last layers (default 6)")
    circuit.add_argument("--fast", action="store_true", help="activation x gradient instead of IG")
    circuit.add_argument("--max-neurons", type=int, default=32, help="critical neurons kept per layer")
    circuit.add_argument("--max-groups", type=int, default=8)
    circuit.add_argument("--draws", type=int, default=20, help="random draws for the ablation baseline")
    circuit.add_argument("--corpus", help="reference texts (one per line, or .jsonl) instead of the shipped ones")
    circuit.add_argument("--seed", type=int, default=0)
    circuit.add_argument("--quiet", action="store_true", help="no progress bar")
    model_args(circuit)
    circuit.set_defaults(func=cmd_circuit)

    neuron = sub.add_parser("neuron", help="decode a neuron's read and write vectors")
    neuron.add_argument("neuron", help="e.g. L3.N1207")
    neuron.add_argument("--top", type=int, default=10)
    model_args(neuron)
    neuron.set_defaults(func=cmd_neuron)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a subcommand; engine errors become one sentence on stderr and exit status 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from app.engine.errors import EngineError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EngineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
