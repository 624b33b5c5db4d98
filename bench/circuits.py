"""Benchmark: NeurFlow circuits on the default model (SmolLM2-135M-Instruct), CPU, a 20-token prompt.

Measures, with medians over repeats (the machine may be shared, so runs are interleaved and the load
average is printed next to every table):

- the cold start: the reference-corpus pass for the default window (once per engine and corpus);
- the default circuit (integrated gradients, 16 steps) and the fast mode (activation x gradient), warm,
  with their per-phase timings;
- how both scale with tau, k and the layer window (one factor at a time, the others at their defaults).

Run from the repository root::

    python bench/circuits.py                          # tables on stdout
    python bench/circuits.py --repeats 5 --json bench/circuits.json
    python bench/circuits.py --threads 2              # pin torch's intra-op threads (default: torch's)
    python bench/circuits.py --no-scaling             # headline numbers only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from app.engine import circuits
from app.engine.service import Engine

PROMPT = "The Eiffel Tower is a famous landmark in the heart of Paris, which is the capital city of"
SCALING = {"tau": (8, 16, 32), "k": (25, 50, 100), "layers": (3, 6, 9)}
DEFAULTS = {"tau": 16, "k": 50, "layers": 6}


def load_average() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def run_once(engine: Engine, **params) -> dict:
    """One circuit: wall time, process CPU time, the engine's phase timings, and progress-call count."""
    calls = []
    cpu, wall = time.process_time(), time.perf_counter()
    result = engine.circuit(PROMPT, progress=lambda *a: calls.append(a), **params)
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
            "timings": result["timings"], "progress_calls": len(calls), "netb": result["params"]["netb"],
            "groups": len(result["groups"]), "neurons": len(result["neurons"]),
            "ablation_all": next(r for r in result["fidelity"]["ablation"] if r["layer"] == "all")}


def median_row(runs: list[dict]) -> dict:
    walls = [r["wall_s"] for r in runs]
    phases: dict[str, float] = {}
    for key in ("reference_s", "trace_s", "root_s", "groups_s", "fidelity_s", "writes_s"):
        phases[key] = statistics.median(r["timings"][key] for r in runs)
    phases["layers_s"] = statistics.median(sum(r["timings"]["layers_s"].values()) for r in runs)
    return {"median_s": statistics.median(walls), "min_s": min(walls), "max_s": max(walls), "runs": len(runs),
            "walls_s": [round(w, 3) for w in walls],
            "cpu_median_s": statistics.median(r["cpu_s"] for r in runs), "phases": phases,
            "progress_calls": runs[0]["progress_calls"], "netb": runs[0]["netb"],
            "groups": runs[0]["groups"], "neurons": runs[0]["neurons"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scaling-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--json", help="write all measurements to this file")
    parser.add_argument("--model-dir", default=str(REPO_ROOT / "models"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    report: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                                "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                                "processor": platform.processor() or platform.machine()}}
    started = time.perf_counter()
    engine = Engine.load(model_dir=Path(args.model_dir))
    tokens = engine.check_prompt(PROMPT)
    report["model"] = engine.info["name"]
    report["prompt"] = {"text": PROMPT, "tokens": tokens}
    print(f"model {engine.info['name']}, prompt of {tokens} tokens, torch threads {torch.get_num_threads()}, "
          f"load {load_average()}  (loaded in {time.perf_counter() - started:.1f} s)")

    # ---- cold start: the corpus pass, then one fast circuit that finds the cache warm
    load = load_average()
    cold = time.perf_counter()
    corpus_s = circuits.warm(engine)
    cache = circuits.reference_cache(engine)
    report["cold"] = {"corpus_pass_s": corpus_s, "texts": len(cache.texts), "positions": cache.size, "load": load}
    print(f"\ncold start: reference corpus pass ({len(cache.texts)} texts, {cache.size} tokens, "
          f"default window) {corpus_s:.2f} s  [load {load}]")
    del cold

    # ---- headline: default and fast, interleaved
    runs: dict[str, list[dict]] = {"default": [], "fast": []}
    run_once(engine, fast=True)  # one warm-up (allocator, rotary tables)
    load = load_average()
    for _ in range(args.repeats):
        runs["fast"].append(run_once(engine, fast=True))
        runs["default"].append(run_once(engine, fast=False))
    report["headline"] = {name: median_row(rows) for name, rows in runs.items()}
    report["headline"]["load"] = load
    print(f"\nwarm circuits over {args.repeats} interleaved repeats  [load at start {load}, now {load_average()}]")
    print(f"{'mode':<24} {'median s':>9} {'min s':>7} {'max s':>7} {'cpu s':>7}  phases (median s)")
    for name, label in (("default", "default (IG, 16 steps)"), ("fast", "fast (act x grad)")):
        row = report["headline"][name]
        phases = "  ".join(f"{k[:-2]} {v:.2f}" for k, v in row["phases"].items() if k != "reference_s")
        print(f"{label:<24} {row['median_s']:>9.2f} {row['min_s']:>7.2f} {row['max_s']:>7.2f} "
              f"{row['cpu_median_s']:>7.2f}  {phases}")
    example = runs["default"][0]
    print(f"(netB {example['netb']}; {example['neurons']} circuit neurons, {example['groups']} groups; "
          f"{example['progress_calls']} progress reports per circuit; zeroing the circuit changes p by "
          f"{example['ablation_all']['core']['delta_prob']:+.3f} vs random "
          f"{example['ablation_all']['random']['delta_prob_mean']:+.3f})")

    # ---- scaling: one factor at a time
    if not args.no_scaling:
        report["scaling"] = {}
        circuits.warm(engine, layers=range(engine.n_layers - max(SCALING["layers"]) - 1, engine.n_layers))
        print(f"\nscaling (median of {args.scaling_repeats}; others at tau 16, k 50, window 6)  [load {load_average()}]")
        print(f"{'factor':<8} {'value':>5} {'default s':>10} {'fast s':>8} {'neurons':>8}")
        for factor, values in SCALING.items():
            for value in values:
                params = {**DEFAULTS, factor: value}
                rows = {"default": [], "fast": []}
                for _ in range(args.scaling_repeats):
                    rows["fast"].append(run_once(engine, fast=True, **params))
                    rows["default"].append(run_once(engine, fast=False, **params))
                entry = {name: median_row(r) for name, r in rows.items()}
                report["scaling"].setdefault(factor, {})[str(value)] = entry
                print(f"{factor:<8} {value:>5} {entry['default']['median_s']:>10.2f} {entry['fast']['median_s']:>8.2f} "
                      f"{entry['default']['neurons']:>8}")
        # the window that reaches the middle of the model, once
        middle = f"{engine.n_layers // 2}-{engine.n_layers - 1}"
        circuits.warm(engine, layers=range(engine.n_layers // 2 - 1, engine.n_layers))
        entry = {"fast": median_row([run_once(engine, fast=True, layers=middle)]),
                 "default": median_row([run_once(engine, fast=False, layers=middle)])}
        report["scaling"]["middle"] = {middle: entry}
        print(f"{'layers':<8} {middle:>5} {entry['default']['median_s']:>10.2f} {entry['fast']['median_s']:>8.2f} "
              f"{entry['default']['neurons']:>8}   (to the middle of the model)")
    report["finished_load"] = load_average()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
