"""Checkpoints as directories: ``config.json``, weights in safetensors, ``fingerprint.json``,
``metrics.json``, and an optional resumable training state.

Weights are stored with safetensors (no pickle is ever loaded). A checkpoint records which method
wrote it and the library versions; loading checks the method, so a model directory of another
method, or a corrupt file, gives a clear :class:`CheckpointError` instead of garbage. Every file is
written atomically and ``config.json`` last (a save over an existing model removes it first), so a
save killed half-way leaves a folder that is refused as incomplete, never a mix of two models.

Resumable state (optimizer moments, step counters, RNG states) is flattened into tensors
(``state-<token>.safetensors``) plus a JSON skeleton (``state.json``, which names its tensor
file): nested dicts/lists of tensors, numbers, strings and ``None`` round-trip exactly. The new
tensors are written to a new file before the skeleton that names them replaces the old one, so a
save killed at any point leaves the previous state whole (older tensor files are removed after).
"""

from __future__ import annotations

import json
import platform
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from segqc.errors import SegqcError
from segqc.io.atomic import atomic_path, write_text_atomic

FORMAT_VERSION = 1
_TENSOR_FILE = "__tensors__"  # the key of state.json that names its tensor file


class CheckpointError(SegqcError):
    """A model directory that cannot be loaded (missing, corrupt, or of another method)."""


@contextmanager
def checkpoint_fits(directory: str | Path, model_name: str) -> Iterator[None]:
    """Turn what goes wrong while a model is built from a checkpoint's config and weights (a
    missing key, a wrong type or value, weights of other shapes, an input error) into one
    :class:`CheckpointError` line: ``DIR: checkpoint does not match the MODEL (what is wrong)``."""
    from segqc.errors import InputError

    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError, InputError) as error:
        if isinstance(error, KeyError):  # a key's repr alone ('nnqc') says nothing
            what = f"its config or weights lack the entry {error.args[0]!r}" if error.args else "an entry is missing"
        elif isinstance(error, TypeError):
            what = "a value of its config has the wrong kind"
        else:
            what = str(error).splitlines()[0] if str(error) else "it cannot be built"
        raise CheckpointError(f"{directory}: checkpoint does not match the {model_name} ({what})") from None


def _versions() -> dict[str, str]:
    import numpy
    import torch

    import segqc

    versions = {"segqc": segqc.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
                "python": platform.python_version()}
    try:
        import monai

        versions["monai"] = monai.__version__
    except ImportError:
        pass
    return versions


def _save_tensors(tensors: Mapping[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp))


def _load_tensors(path: Path, sha256: str | None = None, *, finite: bool = False) -> dict[str, Any]:
    """The tensors of one weights file. ``CheckpointError`` naming it when it is missing, not a
    regular file, of another SHA-256 than ``sha256`` (recorded by :func:`save_checkpoint`: bytes
    damaged inside the tensors still parse), unreadable, or — with ``finite``, for a model's
    weights rather than a training state — holding NaN or infinite values."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from segqc.execution.cache import file_digest

    if not path.exists():
        raise CheckpointError(f"{path}: weights file not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file")
    if sha256 is not None and file_digest(path) != sha256:
        raise CheckpointError(f"{path}: corrupt weights file (its SHA-256 differs from the one recorded in "
                              "config.json when the model was saved)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: corrupt weights file ({str(error).splitlines()[0]})") from None
    for name, tensor in tensors.items() if finite else ():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: corrupt weights file ({name} holds NaN or infinite values)")
    return tensors


def save_checkpoint(
    directory: str | Path,
    *,
    method: str,
    config: Mapping[str, Any],
    weights: Mapping[str, Mapping[str, Any]],
    fingerprint: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> Path:
    """Write a checkpoint directory. ``weights``: component name -> state dict (tensors), each
    saved as ``<name>.safetensors``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").unlink(missing_ok=True)  # incomplete until the new one is written
    from segqc.execution.cache import file_digest

    digests = {}
    for name, state in weights.items():
        _save_tensors(state, directory / f"{name}.safetensors")
        digests[name] = file_digest(directory / f"{name}.safetensors")
    if fingerprint is not None:
        write_text_atomic(directory / "fingerprint.json", json.dumps(fingerprint, indent=2))
    if metrics is not None:
        write_text_atomic(directory / "metrics.json", json.dumps(metrics, indent=2))
    meta = {
        "format_version": FORMAT_VERSION,
        "method": method,
        "seed": seed,
        "components": sorted(weights),
        "sha256": dict(sorted(digests.items())),
        "versions": _versions(),
        "config": dict(config),
    }
    write_text_atomic(directory / "config.json", json.dumps(meta, indent=2))  # last: marks completeness
    return directory


def read_checkpoint_meta(directory: str | Path) -> dict:
    """The ``config.json`` metadata of a model directory (method, components, config, versions)."""
    directory = Path(directory)
    meta_path = directory / "config.json"
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: model directory not found")
    if not meta_path.exists():
        raise CheckpointError(f"{directory}: not a segqc model directory (no config.json)")
    if not meta_path.is_file():
        raise CheckpointError(f"{meta_path}: not a regular file")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{meta_path}: corrupt config.json ({error.msg})") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{meta_path}: corrupt config.json (not UTF-8 text)") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path}: corrupt config.json (not an object)")
    return meta


def load_checkpoint(directory: str | Path, *, method: str) -> tuple[dict, dict[str, dict[str, Any]], dict | None]:
    """Read ``(config, weights per component, fingerprint or None)``; check it is ``method``'s."""
    directory = Path(directory)
    meta = read_checkpoint_meta(directory)
    if meta.get("method") != method:
        raise CheckpointError(f"{directory}: model of method {meta.get('method')!r}, expected {method!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{directory}: checkpoint format {meta.get('format_version')} is not supported")
    found = meta.get("sha256")
    recorded: dict[str, str] = found if isinstance(found, dict) else {}  # models saved before it: none
    weights = {name: _load_tensors(directory / f"{name}.safetensors", recorded.get(name), finite=True)
               for name in meta.get("components", [])}
    fingerprint_path = directory / "fingerprint.json"
    fingerprint = None
    if fingerprint_path.exists():
        try:
            fingerprint = json.loads(fingerprint_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointError(f"{fingerprint_path}: corrupt fingerprint.json ({error})") from None
        if not isinstance(fingerprint, dict):
            raise CheckpointError(f"{fingerprint_path}: corrupt fingerprint.json (not an object)")
    return meta["config"], weights, fingerprint


def _flatten(value: Any, prefix: str, tensors: dict[str, Any]) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value
        return {"__tensor__": key}
    if isinstance(value, Mapping):
        return {"__dict__": [[_flatten(k, prefix, tensors), _flatten(v, prefix, tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"__list__": [_flatten(v, prefix, tensors) for v in value], "tuple": isinstance(value, tuple)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a training state")


def _unflatten(value: Any, tensors: Mapping[str, Any]) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__dict__" in value:
            return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in value["__dict__"]}
        if "__list__" in value:
            items = [_unflatten(v, tensors) for v in value["__list__"]]
            return tuple(items) if value.get("tuple") else items
    return value


def save_state(directory: str | Path, state: Mapping[str, Any]) -> None:
    """Save a resumable training state (nested containers of tensors and plain values; the module
    docstring says why a save killed half-way leaves the previous state whole)."""
    directory = Path(directory)
    tensors: dict[str, Any] = {}
    skeleton = _flatten(dict(state), "", tensors)
    name = f"state-{secrets.token_hex(4)}.safetensors"
    _save_tensors(tensors, directory / name)
    skeleton[_TENSOR_FILE] = name
    write_text_atomic(directory / "state.json", json.dumps(skeleton))  # the switch to the new state
    for old in directory.glob("state*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def load_state(directory: str | Path) -> dict | None:
    """The training state saved by :func:`save_state`, or ``None`` if there is none."""
    directory = Path(directory)
    if not (directory / "state.json").exists():
        return None
    try:
        skeleton = json.loads((directory / "state.json").read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{directory / 'state.json'}: corrupt training state ({error.msg})") from None
    name = skeleton.get(_TENSOR_FILE, "state.safetensors") if isinstance(skeleton, dict) else None
    if not isinstance(name, str) or Path(name).name != name:
        raise CheckpointError(f"{directory / 'state.json'}: corrupt training state (bad tensor file name)")
    return _unflatten(skeleton, _load_tensors(directory / name))
