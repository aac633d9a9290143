"""The one resumable training loop of segqc: a run folder with a record, and stages of steps.

Every learned method trains as a sequence of :class:`Stage` objects (nnQC: ``ssl`` -> ``vae`` ->
``ldm``; the zoo: ``train`` with one step per epoch; the CAE: ``train``). :func:`run_stage`
runs, resumes or skips a stage:

* a stage's resumable state (module weights, optimizer moments, the step count, the loss history
  and the seconds spent) is saved to ``OUT/stages/<name>/`` every ``checkpoint_every`` steps and
  when the stage ends (:func:`segqc.training.save_state`: safetensors + JSON, atomic);
* a rerun loads it and continues at the saved step; a stage whose saved step count reaches the
  requested one is reused as it is; one whose step count was *raised* (more epochs) continues;
* the randomness of step ``k`` must depend only on ``(seed, stage, k)`` — use
  :func:`step_generators` — so a resumed stage draws exactly what an uninterrupted one would;
* ``after_step(done, history, seconds)`` runs after every step (e.g. the zoo saves a snapshot).

:func:`check_run_record` guards the folder: ``OUT/run.json`` records the method, the settings
that must not change (the config's ``resume_key``) and a summary of the data; a rerun with other
settings or data is refused with one line, a folder with a state but no record too, and so is a
folder holding a model that is not this run's own (:func:`check_training_folder`, which a trainer
also calls before it writes anything, e.g. its prepared data, so that a refused run leaves the
folder as it was).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segqc.errors import InputError
from segqc.execution.lock import output_lock
from segqc.execution.pool import progress_bar
from segqc.io.atomic import remove_temporaries, write_text_atomic
from segqc.io.json_files import read_json_object
from segqc.training.checkpoints import CheckpointError, load_state, read_checkpoint_meta, save_state


@dataclass
class Stage:
    """One stage: ``steps`` calls of ``step(k)`` (k = 0 .. steps-1, returns named losses) that
    train ``modules`` with ``optimizers``; ``after_step(done, history, seconds)`` is called after
    each (``done`` = steps finished so far)."""

    name: str
    steps: int
    modules: Mapping[str, Any]
    optimizers: Mapping[str, Any]
    step: Callable[[int], Mapping[str, float]]
    after_step: Callable[[int, dict[str, list[float]], float], None] | None = None
    unit: str = "step"


def finished_steps(out_dir: str | Path, name: str) -> int:
    """Steps of stage ``name`` saved in ``out_dir`` (0 when none), read without loading the
    weights: callers skip expensive data preparation for a stage that is complete."""
    path = Path(out_dir) / "stages" / name / "state.json"
    if not path.is_file():
        return 0
    try:
        skeleton = json.loads(path.read_text(encoding="utf-8"))
        fields = {k: v for k, v in skeleton["__dict__"]}
        return int(fields["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return 0


def arrays_crc32(arrays: Iterable[Any]) -> int:
    """CRC-32 of the bytes of ``arrays`` in order (numpy arrays, C order): the training data's
    content in a run record, so that a rerun on changed images or labels is refused even when
    their counts stay the same."""
    import zlib

    crc = 0
    for array in arrays:
        crc = zlib.crc32(np.ascontiguousarray(array).data, crc)  # the buffer itself: no copy of its bytes
    return crc


def step_generators(seed: int, *words: int) -> tuple[np.random.Generator, Any]:
    """A numpy Generator and a torch Generator seeded by ``(seed, *words)`` (e.g. the stage's
    index and the step): the same words give the same draws in any run."""
    import torch

    key = [int(seed), *(int(w) for w in words)]
    rng = np.random.default_rng(key)
    return rng, torch.Generator().manual_seed(int(np.random.default_rng(key + [1]).integers(2**62)))


def stage_metrics(steps: int, seconds: float, history: Mapping[str, list[float]]) -> dict:
    """Steps, total and per-step time (mean and median: the median is robust to other jobs on a
    shared machine), and the per-step losses."""
    times = history.get("step_seconds", [])
    return {"steps": steps, "seconds": round(seconds, 3),
            "seconds_per_step": round(seconds / steps, 4) if steps else None,
            "median_step_seconds": round(float(np.median(times)), 4) if times else None,
            "losses": {k: [round(v, 6) for v in values] for k, values in history.items() if k != "step_seconds"}}


def run_stage(stage: Stage, out_dir: str | Path, *, checkpoint_every: int, log: Callable[[str], None] | None = None,
              progress: bool = False, prefix: str = "") -> dict:
    """Run, resume or reuse ``stage`` in ``out_dir/stages/<name>`` (module docstring); return its
    :func:`stage_metrics`. Modules are in train mode while it runs and eval mode afterwards. The
    run holds ``out_dir``'s lock (:mod:`segqc.execution.lock`): a second training into the same
    folder at the same time is refused with one line."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with output_lock(out_dir):
        return _run_stage(stage, out_dir, checkpoint_every=checkpoint_every, log=log, progress=progress,
                          prefix=prefix)


def _run_stage(stage: Stage, out_dir: str | Path, *, checkpoint_every: int, log: Callable[[str], None] | None,
               progress: bool, prefix: str) -> dict:
    say = log or (lambda _line: None)
    directory = Path(out_dir) / "stages" / stage.name
    remove_temporaries(folders=[directory])  # of a save killed half-way; the lock says no one else writes
    state = load_state(directory)
    history: dict[str, list[float]] = {}
    start, seconds = 0, 0.0
    label = f"{prefix}{stage.name}"
    if state is not None:
        for name, module in stage.modules.items():
            module.load_state_dict(state["weights"][name])
        history = {k: list(v) for k, v in state["history"].items()}
        start, seconds = int(state["step"]), float(state["seconds"])
        if start >= stage.steps:
            say(f"{stage.name}: done before ({start} {stage.unit}s), reusing it")
            for module in stage.modules.values():
                module.eval()
            return stage_metrics(start, seconds, history)
        for name, optimizer in stage.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        say(f"{stage.name}: resuming at {stage.unit} {start}/{stage.steps}")

    def save(step: int, done: bool) -> None:
        save_state(directory, {
            "stage": stage.name, "step": step, "done": done, "seconds": seconds, "history": history,
            "weights": {n: m.state_dict() for n, m in stage.modules.items()},
            "optimizers": {n: o.state_dict() for n, o in stage.optimizers.items()},
        })

    for module in stage.modules.values():
        module.train()
    from rich.progress import TextColumn

    every = max(1, stage.steps // 10)
    with progress_bar(progress, TextColumn("{task.fields[loss]}")) as bar:
        task = bar.add_task(label, total=stage.steps, completed=start, loss="")
        for step in range(start, stage.steps):
            began = time.perf_counter()
            losses = stage.step(step)
            elapsed = time.perf_counter() - began
            seconds += elapsed
            for key, value in losses.items():
                history.setdefault(key, []).append(float(value))
            history.setdefault("step_seconds", []).append(elapsed)
            bar.update(task, advance=1, loss=" ".join(f"{k} {v:.4f}" for k, v in losses.items()))
            if not all(np.isfinite(float(v)) for v in losses.values()):
                raise InputError(f"{label} diverged at {stage.unit} {step + 1} (losses {dict(losses)}); lower the "
                                 "learning rate")
            if stage.after_step is not None:
                stage.after_step(step + 1, history, seconds)
            if (step + 1) % every == 0 or step + 1 == stage.steps:
                window = {k: float(np.mean(v[-every:])) for k, v in history.items() if k != "step_seconds"}
                say(f"{stage.name} {stage.unit} {step + 1}/{stage.steps}: "
                    + ", ".join(f"{k} {v:.4f}" for k, v in window.items())
                    + f" ({np.median(history['step_seconds'][-every:]):.3f} s/{stage.unit}, median)")
            if (step + 1) % checkpoint_every == 0 and step + 1 < stage.steps:
                save(step + 1, False)
    save(stage.steps, True)
    for module in stage.modules.values():
        module.eval()
    return stage_metrics(stage.steps, seconds, history)


def start_run(out_dir: str | Path, *, method: str, settings: Mapping[str, Any], data: Mapping[str, Any],
              seed: int, device: str = "auto", may_change: str = "") -> tuple[Path, Any]:
    """Begin (or resume) a training run: create ``out_dir``, check or write its record
    (:func:`check_run_record`), seed Python, numpy and torch; returns the folder and the torch
    device (``"auto"``: CUDA when there is one)."""
    from segqc.training.seeding import seed_everything, select_device

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_run_record(out, method=method, settings=settings, data=data, may_change=may_change)
    seed_everything(seed)
    return out, select_device(device)


LATER_DATA_FIELDS = ("crc32",)
"""Data-summary fields that run records of earlier segqc versions lack (not compared with those)."""

LATER_SETTINGS = {"field_of_view": "spacing"}
"""Config fields that run records of earlier segqc versions lack, with the value every such run
had: a record without the field is compared as if it held that value."""


def _record_format(method: str) -> str:
    return f"segqc-{method}-run"


def _read_record(path: Path) -> dict[str, Any]:
    return read_json_object(path, what="run.json", advice="use an empty folder")


def _model_method(directory: Path) -> str | None:
    """The method of the segqc checkpoint in ``directory`` (its ``config.json``), or None when
    there is none: a ``config.json`` that is not a checkpoint's (e.g. a user's config file kept
    there, or an unreadable file) is not one."""
    if not (directory / "config.json").is_file():
        return None
    try:
        meta = read_checkpoint_meta(directory)
    except (CheckpointError, UnicodeDecodeError, OSError):
        return None
    if {"format_version", "method", "components"} <= set(meta):
        return str(meta["method"])
    return None


def check_training_folder(out_dir: str | Path, *, method: str | None = None,
                          settings: Mapping[str, Any] | None = None, may_change: str = "") -> None:
    """Refuse, reading only, an output folder that is not this training run's own, before
    anything is written to it: a model folder (a segqc checkpoint's ``config.json`` in the
    folder or in its ``model/``) or a training state without the ``run.json`` of the run that
    made it, and a checkpoint of another method than the run's. With ``method``: a run of
    another kind; with ``settings`` too: a run of ``method`` with other settings (the
    config's ``resume_key``; ``may_change`` names the fields that may differ, for the message).
    A missing or empty folder passes; the data are compared by :func:`check_run_record`."""
    out = Path(out_dir)
    if not out.is_dir():
        return
    path = out / "run.json"
    old = _read_record(path) if path.is_file() else None
    models = {where: found for where in ("config.json", "model/config.json")
              if (found := _model_method(out / Path(where).parent)) is not None}
    if old is None:
        if models:
            where, found = next(iter(models.items()))
            raise InputError(f"holds a model ({where}, method {found}) but no training run (run.json); train into "
                             "another folder", out)
        if (out / "stages").exists():
            raise InputError("holds a training state but no run.json; use an empty folder", out)
        return
    kind = old.get("format")
    for where, found in models.items():
        if kind != _record_format(found):
            raise InputError(f"holds a model ({where}, method {found}) beside a training run of another kind; use "
                             "another folder", out)
    if method is None:
        return
    if kind != _record_format(method):
        raise InputError(f"holds a training run of another kind (not {method}); use another folder", out)
    if settings is None:
        return
    config: dict[str, Any] = json.loads(json.dumps(dict(settings)))  # as JSON gives it back
    raw = old.get("config")
    saved: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
    for key, value in LATER_SETTINGS.items():
        if key in config:
            saved.setdefault(key, value)
    if saved != config:
        changed = [k for k in config if saved.get(k) != config[k]] or sorted(set(saved) - set(config))
        detail = ", ".join(f"{k} {saved.get(k)!r} -> {config.get(k)!r}" for k in changed[:3])
        allowed = f"only {may_change} may change when continuing; " if may_change else ""
        raise InputError(f"holds a {method} run with other settings ({detail}); {allowed}use another folder", out)


def check_run_record(out_dir: str | Path, *, method: str, settings: Mapping[str, Any], data: Mapping[str, Any],
                     may_change: str = "") -> None:
    """Write ``out_dir/run.json`` on the first run; on a rerun refuse other settings or data
    (module docstring), and any folder :func:`check_training_folder` refuses. ``may_change``: the
    fields that may differ, for the message."""
    out = Path(out_dir)
    path = out / "run.json"
    check_training_folder(out, method=method, settings=settings, may_change=may_change)
    # compared as JSON gives them back: integer keys become strings, tuples lists
    record: dict[str, Any] = json.loads(json.dumps({"format": _record_format(method), "config": dict(settings),
                                                    "data": dict(data)}))
    if path.is_file():
        raw = _read_record(path).get("data")
        old_data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        # a data field newer than the record (e.g. a checksum added to segqc later) is not compared
        if old_data != {k: v for k, v in record["data"].items() if k in old_data or k not in LATER_DATA_FIELDS}:
            raise InputError(f"holds a {method} run on other training data; use another folder", out)
        return
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(record, indent=2))


def train_single_stage(out_dir: str | Path, *, method: str, config: Any, data: Mapping[str, Any], device: str,
                       build: Callable[[], Any], stage: Callable[[Any, Any], Stage],
                       save: Callable[[Any, Path, dict[str, Any]], Path], log: Callable[[str], None] | None = None,
                       progress: bool = False) -> Path:
    """The whole training of a method that learns in one stage (LDSeg, the U-Nets, consensus
    diffusion): :func:`start_run` with the config's ``resume_key`` and the data summary ``data``,
    ``torch.manual_seed(config.seed)``, ``build()`` moved to the run's device, :func:`run_stage`
    of ``stage(model, device)`` every ``config.checkpoint_every`` steps, then ``save(model,
    OUT/model, metrics)``; returns the model directory."""
    import torch

    say = log or (lambda _line: None)
    out, dev = start_run(out_dir, method=method, settings=config.resume_key(), data=data, seed=config.seed,
                         device=device, may_change=", ".join(config.RESUMABLE_FIELDS))
    torch.manual_seed(config.seed)
    model = build().to(dev)
    metrics: dict[str, Any] = {"data": dict(data), "device": str(dev), "threads": torch.get_num_threads()}
    with torch.enable_grad():
        metrics["train"] = run_stage(stage(model, dev), out, checkpoint_every=config.checkpoint_every, log=say,
                                     progress=progress, prefix=f"{method} ")
    model_dir = save(model, out / "model", metrics)
    say(f"model saved to {model_dir}")
    return model_dir
