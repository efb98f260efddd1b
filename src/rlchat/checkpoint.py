"""Self-describing checkpoint bundles, written atomically and verified on load.

A bundle is a directory:
    model.safetensors   weights
    config.json         model, data, tokenizer and training configs, stage, metrics
    tokenizer.json      the trained tokenizer
    state.safetensors   optimizer tensors and torch RNG state (for resume)
    state.json          step, epoch, optimizer hyperparameters, python RNG state, trainer state
    checksums.json      SHA-256 of every file above, so a truncated or corrupt bundle is caught

Nothing is ever unpickled: tensors go through safetensors, everything else through JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
STATE_TENSORS_FILE = "state.safetensors"
STATE_FILE = "state.json"
CHECKSUMS_FILE = "checksums.json"


class CheckpointError(RuntimeError):
    """A bundle that is missing, incomplete or corrupt; the message says which file."""


@dataclass
class Bundle:
    """What a checkpoint holds once read back."""

    path: Path
    config: dict[str, Any]
    tokenizer_json: str
    weights: dict[str, torch.Tensor]
    state: dict[str, Any] = field(default_factory=dict)
    state_tensors: dict[str, torch.Tensor] = field(default_factory=dict)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file so that readers see the old or the new content, never a half."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary, shareable files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- optimizer and RNG state as tensors + JSON ----------------------------------------------


def flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON-able rest."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_id}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, param_id, name = key.split(".", 2)
            state.setdefault(int(param_id), {})[name] = value
    for param_id, values in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    # JSON turned tuples (Adam's betas) into lists; give them back their type.
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        for group in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import random

    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    version, internal, gauss = random.getstate()
    return tensors, {"python": [version, list(internal), gauss]}


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    import random

    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


# --- bundles --------------------------------------------------------------------------------


def save_bundle(
    path: Path,
    *,
    model: nn.Module,
    config: dict[str, Any],
    tokenizer_json: str,
    state: dict[str, Any] | None = None,
    state_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a bundle into a temp directory, then rename it into place in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    # mkdtemp makes 0700: a server running as another user (the image's, systemd's) could
    # not read the run.
    os.chmod(tmp, 0o755)
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        # Tied weights appear under two names; safetensors refuses shared storage.
        save_file(dedupe_shared(weights), tmp / MODEL_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
        (tmp / TOKENIZER_FILE).write_text(tokenizer_json, encoding="utf-8")
        if state is not None:
            save_file(state_tensors or {}, tmp / STATE_TENSORS_FILE)
            (tmp / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
        checksums = {p.name: file_sha256(p) for p in sorted(tmp.iterdir())}
        (tmp / CHECKSUMS_FILE).write_text(json.dumps(checksums, indent=2), encoding="utf-8")
        for p in tmp.iterdir():
            os.chmod(p, 0o644)  # safetensors writes 0600
            with open(p, "rb") as handle:
                os.fsync(handle.fileno())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def dedupe_shared(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep one name per storage (tied embeddings); load_state_dict(strict=False) restores ties."""
    seen: dict[int, str] = {}
    result = {}
    for name, tensor in weights.items():
        key = tensor.untyped_storage().data_ptr()
        if key in seen and tensor.numel() > 0:
            continue
        seen[key] = name
        result[name] = tensor
    return result


def verify_bundle(path: Path) -> None:
    """Raise CheckpointError unless every file matches its recorded checksum."""
    path = Path(path)
    sums_path = path / CHECKSUMS_FILE
    if not sums_path.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: {CHECKSUMS_FILE} is missing")
    try:
        checksums = json.loads(sums_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"checkpoint {path}: {CHECKSUMS_FILE} is corrupt ({error})") from None
    for name, expected in checksums.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
        if file_sha256(file) != expected:
            raise CheckpointError(f"checkpoint {path} is corrupt: {name} fails its checksum")


def load_bundle(path: Path, *, with_state: bool = False, verify: bool = True) -> Bundle:
    """Read a bundle back (safetensors + JSON only); verified against its checksums."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}")
    if verify:
        verify_bundle(path)
    bundle = Bundle(
        path=path,
        config=json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")),
        tokenizer_json=(path / TOKENIZER_FILE).read_text(encoding="utf-8"),
        weights=load_file(path / MODEL_FILE),
    )
    if with_state:
        if not (path / STATE_FILE).is_file():
            raise CheckpointError(f"checkpoint {path} holds no training state to resume from")
        bundle.state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        bundle.state_tensors = load_file(path / STATE_TENSORS_FILE)
    return bundle


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Load weights saved by save_bundle, tolerating only the dropped names of tied tensors."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {name for name in missing if _is_tied_alias(model, name, weights)}
    if set(missing) - tied or unexpected:
        raise CheckpointError(
            f"weights do not fit the model: missing {sorted(set(missing) - tied)}, "
            f"unexpected {sorted(unexpected)}"
        )


def _is_tied_alias(model: nn.Module, name: str, weights: dict[str, torch.Tensor]) -> bool:
    state = model.state_dict()
    ptr = state[name].untyped_storage().data_ptr()
    return any(
        other in weights and state[other].untyped_storage().data_ptr() == ptr
        for other in state
        if other != name
    )
