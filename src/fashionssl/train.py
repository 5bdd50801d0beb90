"""The one training loop, for every method: data order, augmentation, schedule, precision,
checkpoints, metrics, progress and the kNN monitor. It never asks which method it runs.

Reproducibility: `seed` fixes the model's initialisation; each epoch's data order and augmentation
draw from generators seeded by (seed, epoch), so an epoch replays identically whether or not the
run was interrupted before it, and resuming from an epoch checkpoint needs no RNG state.

Several processes (torchrun, see docs/distributed.md): `batch_size` is the global batch; the data
order is the same for any number of processes and each rank takes its shard of every global batch,
augments it with its own random stream (seeded by seed, epoch and rank) and runs it through the
DistributedDataParallel model. Rank 0 alone writes files, prints progress and runs the kNN monitor.
"""

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import augment
from .checkpoint import load_checkpoint, load_into, resolve_checkpoint, save_checkpoint
from .config import Config, config_from_dict, with_options_of_older_runs
from .data import DataInfo, Dataset, load_dataset
from .device import autocast_dtype, keep_freed_host_memory, resolve_device
from .distributed import (is_main_process, main_process_decides, mean_over_ranks, process_device,
                          rank, shard_batches, sync_batchnorm, world_size)
from .errors import UserError
from .interrupt import CtrlC
from .methods import Method, build_model, method_options
from .optim import build_optimizer
from .probe import accuracy, extract_features, knn_predict
from .runlog import MetricsLog, versions, write_json
from .schedules import warmup_cosine


def stream_seed(seed: int, epoch: int, stream: int, rank: int = 0) -> int:
    """A well-mixed 63-bit seed for one random stream (0: data order, 1: augmentation) of one epoch
    on one rank. Rank 0's seeds are those of a single process (SeedSequence ignores trailing zeros)."""
    return int(np.random.SeedSequence([seed, epoch, stream, rank]).generate_state(1, np.uint64)[0] >> 1)


def with_every_option(cfg: Config, aug: augment.AugmentConfig) -> Config:
    """`cfg` with the method's and the augmentation's options spelled out, defaults included, so that
    config.json says what the run used and a resume replays it even after a default has changed (the
    crop scale's did on 2026-12-04, which left earlier runs' config.json silent about theirs). The
    normalisation and image size stay out unless the preset or the run set them: they come from the
    data. Pairs are lists, as in TOML and JSON, so that the checkpoint's config and config.json agree."""
    from_data = {"mean", "std", "size"} - set(augment.PRESETS[cfg.augment]) - set(cfg.augment_options)
    return dataclasses.replace(
        cfg, method_options={**method_options(cfg.method), **cfg.method_options},
        augment_options={k: list(v) if isinstance(v, tuple) else v
                         for k, v in dataclasses.asdict(aug).items() if k not in from_data})


def recorded_config(config_file: Path) -> dict:
    """A run's config.json as saved, options that came in after it with the values it trained with
    (config.with_options_of_older_runs; a damaged file is a user error naming it)."""
    try:
        values = json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {config_file}: {e}") from None
    return with_options_of_older_runs(values) if isinstance(values, dict) else values


def differences_from_run(cfg: Config, run_dir: Path) -> list[str]:
    """'key: the run has A, asked for B' for each setting where the run recorded in `run_dir`'s
    config.json differs from `cfg` (its output folder aside), so that a bench or sweep that reads back
    earlier runs never passes off a run of another recipe (a changed lr, option or default) as the
    one asked for. Options a run of an earlier version left unrecorded are not counted as differences,
    but for those whose earlier value is known (config.OPTIONS_OF_OLDER_RUNS)."""
    recorded = recorded_config(run_dir / "config.json")
    expected = json.loads(json.dumps(dataclasses.asdict(
        with_every_option(cfg, augment.make_config(cfg.augment, **cfg.augment_options)))))
    differences = []
    for key, value in expected.items():
        if key in ("method_options", "augment_options"):
            differences += [f"{key}.{name}: the run has {recorded[key][name]!r}, asked for {option!r}"
                            for name, option in value.items()
                            if name in recorded.get(key, {}) and recorded[key][name] != option]
        elif key != "out" and recorded.get(key) != value:
            differences.append(f"{key}: the run has {recorded.get(key)!r}, asked for {value!r}")
    return differences


def check_same_recipe(cfg: Config, run_dir: Path) -> None:
    """Refuses to read back or continue the run in `run_dir` when it was trained with other settings
    than `cfg`; a folder that holds no run yet passes."""
    differences = differences_from_run(cfg, run_dir) if (run_dir / "config.json").exists() else []
    if differences:
        raise UserError(f"{run_dir} holds a run of other settings than asked for ({'; '.join(differences)}): "
                        f"write to another output folder, or delete {run_dir} to train it again")


def new_run_dir(cfg: Config) -> Path:
    """The run directory for a new run; refuses one that already holds a run."""
    run_dir = Path(cfg.out or f"runs/{cfg.method}-{cfg.encoder}-{time.strftime('%Y%m%d-%H%M%S')}")
    if (run_dir / "checkpoint.pt").exists():
        raise UserError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")
    return run_dir


def resume_point(resume: str | Path) -> tuple[dict | None, Config, Path]:
    """(checkpoint state or None, config, checkpoint path) to continue from. A run killed before its
    first checkpoint has only config.json: it starts again from that config, which replays it exactly."""
    run, config_file = Path(resume), Path(resume) / "config.json"
    if run.is_dir() and not (run / "checkpoint.pt").exists() and config_file.is_file():
        return None, config_from_dict(recorded_config(config_file), str(config_file)), run / "checkpoint.pt"
    state, checkpoint = load_checkpoint(resume), resolve_checkpoint(resume)
    return state, config_from_dict(state["config"], f"{checkpoint} config"), checkpoint


def last_good(run_dir: Path, epoch: int) -> str:
    """Where a stopped run can be resumed from: the checkpoint written after `epoch` epochs."""
    if epoch == 0:
        return "No checkpoint was written yet."
    return f"Last good checkpoint: {run_dir / 'checkpoint.pt'} (after epoch {epoch}; resume with --resume {run_dir})."


def all_finite(model: torch.nn.Module) -> bool:
    """Whether every parameter and buffer is finite. BatchNorm can keep the loss finite while the
    weights and running statistics blow up, so the loss alone does not tell."""
    return all(bool(torch.isfinite(t).all()) for t in [*model.parameters(), *model.buffers()] if t.is_floating_point())


def uses_sync_batchnorm(cfg: Config, model: Method) -> bool:
    """Whether BatchNorm should normalise with global-batch statistics: `cfg.sync_batchnorm`, or by
    default in multi-process runs of methods that compare samples within a batch."""
    if world_size() == 1:
        return False
    return model.needs_sync_batchnorm if cfg.sync_batchnorm is None else cfg.sync_batchnorm


def build_training_model(cfg: Config, info: DataInfo, device: torch.device) -> Method:
    """The configured method for `info`'s images, initialised from `cfg.seed`, on `device`, with
    SyncBatchNorm where `uses_sync_batchnorm` says so (its state dict is BatchNorm's: checkpoints
    move between world sizes)."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, info)
    if uses_sync_batchnorm(cfg, model):
        sync_batchnorm(model)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def training_forward(model: Method, device: torch.device, compile: bool) -> torch.nn.Module:
    """What the loop calls forward on: with several processes the model wrapped in
    DistributedDataParallel (which averages gradients over ranks), torch.compile'd when asked.
    DDP also copies rank 0's buffers to the others before each forward: with per-rank BatchNorm the
    running statistics are rank 0's; SyncBatchNorm's and MoCo's queue are equal everywhere anyway.
    Methods that leave trainable parameters out of some steps' loss (`skips_parameters`) make DDP
    look for them each step; otherwise it would stop at the next step.
    """
    if world_size() > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=model.skips_parameters)
    return torch.compile(model) if compile else model


def train_step(forward: torch.nn.Module, model: Method, optimizer: torch.optim.Optimizer, views: list[torch.Tensor],
               labels: torch.Tensor | None, lr: float, step: int, total_steps: int,
               amp: torch.dtype | None) -> dict[str, torch.Tensor]:
    """One optimizer step on this rank's share of the global batch. Returns this rank's loss and
    the method's extra logs ("loss" first), detached float scalars left on the device: reading one
    makes the host wait for the device, so the loop reads them every `log_every` steps, not each step."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(views[0].device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        loss, extras = forward(views, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model.after_step(step, total_steps)
    return {"loss": loss.detach().float(), **{name: value.detach().float() for name, value in extras.items()}}


def read_window(values: list[dict[str, torch.Tensor]]) -> tuple[list[str], list[list[float]]]:
    """(names, one row per step) of the steps' values (train_step's) as means over ranks, the global
    batch's, the same on every rank: one collective and one wait for the device for the whole window.
    Every rank must call it at the same steps."""
    rows = mean_over_ranks(torch.stack([torch.stack(list(v.values())) for v in values])).tolist()
    return list(values[0]), rows


def knn_monitor(model: Method, data: Dataset, aug: augment.AugmentConfig, cfg: Config,
                device: torch.device, amp: torch.dtype | None) -> float:
    """kNN accuracy on the validation split with a bank of the first `knn_bank_size` training images."""
    bank = data.train.images[:cfg.knn_bank_size]
    bank_features = extract_features(model.backbone, bank, aug, device, cfg.eval_batch_size, amp)
    val_features = extract_features(model.backbone, data.val.images, aug, device, cfg.eval_batch_size, amp)
    predictions = knn_predict(bank_features, data.train.labels[:len(bank)].to(device), val_features)
    return accuracy(predictions, data.val.labels.to(device))


def pretrain(cfg: Config | None = None, resume: str | Path | None = None) -> Path:
    """Train `cfg.method` and return the run directory (config, metrics, checkpoint).

    With `resume` (a run directory or checkpoint), the run's saved config is used and training
    continues after the last completed epoch.
    """
    state = None
    if resume is not None:  # rank 0 reads the checkpoint and sends it: only it needs the run directory
        state, cfg, checkpoint = main_process_decides(lambda: resume_point(resume))
        run_dir = checkpoint.parent
    else:
        cfg = cfg or Config()
        run_dir = main_process_decides(lambda: new_run_dir(cfg))
    main = is_main_process()
    device = process_device(resolve_device(cfg.device))
    amp = autocast_dtype(cfg.precision, device)
    data = load_dataset(cfg.data, cfg.val_size, train_subset=cfg.train_subset, data_dir=cfg.data_dir)
    aug = augment.make_config(cfg.augment, data.info, **cfg.augment_options)
    model = build_training_model(cfg, data.info, device)  # first: it refuses methods the data cannot train
    cfg = with_every_option(cfg, aug)  # after the model, which refuses unknown methods and options
    n, global_batch = len(data.train), cfg.batch_size
    if global_batch > n:
        raise UserError(f"batch_size {global_batch} is larger than the {n} training images; lower --batch-size")
    if global_batch % world_size():
        raise UserError(f"batch_size {global_batch} (the global batch) is not divisible by the {world_size()} "
                        f"processes; choose a multiple of {world_size()}")
    batch = global_batch // world_size()  # this process's share of each global batch
    steps_per_epoch = n // global_batch  # the last incomplete batch is dropped: contrastive losses want full batches
    total_steps = steps_per_epoch * cfg.epochs
    lrs = warmup_cosine(cfg.lr, total_steps, round(cfg.warmup_epochs * steps_per_epoch), cfg.final_lr).tolist()

    optimizer = build_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay)
    start_epoch = 0
    if state is not None:
        if "data" in state and DataInfo.from_dict(state["data"]) != data.info:
            raise UserError(f"{data.source} is not the data {checkpoint} was trained on (its images, their "
                            "statistics or its classes changed); resume with the same data, or start a new run")
        load_into(model, state["model"], checkpoint, f"method {cfg.method!r} with encoder {cfg.encoder!r}")
        load_into(optimizer, state.get("optimizer"), checkpoint, f"optimizer {cfg.optimizer!r} for this model")
        start_epoch = state["epoch"]
    elif main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create run directory {run_dir}: {e.strerror}") from None
        write_json(run_dir / "config.json", dataclasses.asdict(cfg))
        write_json(run_dir / "versions.json", versions(device))
    forward = training_forward(model, device, cfg.compile)

    images = data.train.images.to(device)
    labels = data.train.labels.to(device) if data.labelled else None  # methods that need labels refuse None
    # Lines past the last checkpoint (left by a killed attempt) are dropped: those steps run again.
    log = MetricsLog(run_dir, resume_step=start_epoch * steps_per_epoch) if main else None
    bar = tqdm(total=(cfg.epochs - start_epoch) * steps_per_epoch * global_batch, unit="img", unit_scale=True,
               dynamic_ncols=True, mininterval=1.0, disable=None if main else True)
    saved_epoch = start_epoch
    if main and not data.labelled:
        bar.write(f"{data.source} has no labels: no kNN monitor, and no linear probe or kNN to evaluate with")
    # Tiny gradients turn into denormal floats, which x86 CPUs process up to 7x slower (measured:
    # fp32 steps swung between 180 and 1,300 images/s); flushing them to zero costs no accuracy.
    # Process-wide, so it is switched off again when training ends; so is the host memory policy.
    torch.set_flush_denormal(True)
    restore_host_memory = keep_freed_host_memory(device)
    ctrl_c = CtrlC()  # stops the run between steps (interrupt.py says why)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            order = torch.randperm(n, generator=torch.Generator().manual_seed(stream_seed(cfg.seed, epoch, 0)))
            order = shard_batches(order, global_batch).to(device)
            aug_generator = torch.Generator(device).manual_seed(stream_seed(cfg.seed, epoch, 1, rank()))
            epoch_start, window_start = time.perf_counter(), time.perf_counter()
            sums: dict[str, float] = {}
            window: list[dict[str, torch.Tensor]] = []  # the steps' values not read yet
            bar.set_description(f"epoch {epoch + 1}/{cfg.epochs}")
            for i in range(steps_per_epoch):
                ctrl_c.raise_if_pressed()
                step = epoch * steps_per_epoch + i
                index = order[i * batch:(i + 1) * batch]
                views = augment.views(images[index], aug, aug_generator, model.view_spec)
                if cfg.channels_last:
                    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                batch_labels = None if labels is None else labels[index]
                window.append(train_step(forward, model, optimizer, views, batch_labels, lrs[step], step,
                                         total_steps, amp))
                bar.update(global_batch)
                log_now = (step + 1) % cfg.log_every == 0
                if not (log_now or i + 1 == steps_per_epoch):
                    continue
                # Read every log_every steps and at the epoch's end: a non-finite loss stops the run
                # within one logging interval, naming the step where it appeared.
                names, rows = read_window(window)
                for offset, row in enumerate(rows):
                    if not math.isfinite(row[0]):
                        bad_step = step - len(rows) + offset + 1
                        raise UserError(f"loss became {row[0]} at step {bad_step + 1} (epoch {epoch + 1}); run "
                                        f"stopped. {last_good(run_dir, epoch)} Try a lower --lr.")
                    for name, value in zip(names, row):
                        sums[name] = sums.get(name, 0.0) + value
                window = []
                if main and log_now:
                    now = time.perf_counter()
                    speed = cfg.log_every * global_batch / (now - window_start)
                    window_start = now
                    loss, *extras = rows[-1]
                    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lrs[step]:.2e}", refresh=False)
                    log.log(step + 1, loss=loss, lr=lrs[step], images_per_s=speed, **dict(zip(names[1:], extras)))

            epoch_time = time.perf_counter() - epoch_start
            means = {f"epoch_{name}": value / steps_per_epoch for name, value in sums.items()}
            summary = {"epoch": epoch + 1, "epoch_loss": means.pop("epoch_loss"), "epoch_seconds": epoch_time,
                       "epoch_images_per_s": steps_per_epoch * global_batch / epoch_time, **means}
            if not all_finite(model):
                raise UserError(f"weights or BatchNorm statistics became non-finite during epoch {epoch + 1} (the loss "
                                f"stayed finite); run stopped. {last_good(run_dir, epoch)} Try a lower --lr.")
            if not main:  # the other ranks go on to the next epoch and wait for rank 0 in its first step
                continue
            if cfg.knn_every and ((epoch + 1) % cfg.knn_every == 0 or epoch + 1 == cfg.epochs) and len(data.val):
                summary["knn_val_acc"] = knn_monitor(model, data, aug, cfg, device, amp)
            save_checkpoint(run_dir / "checkpoint.pt", {
                "config": dataclasses.asdict(cfg), "data": dataclasses.asdict(data.info),
                "epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            })
            saved_epoch = epoch + 1
            log.log((epoch + 1) * steps_per_epoch, **summary)
            bar.write(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
            for warning in model.epoch_warnings(summary):
                bar.write(f"warning: {warning}")
        ctrl_c.raise_if_pressed()  # pressed after the last step: no evaluation follows
    except KeyboardInterrupt:  # Ctrl-C: say where the completed epochs are
        when = f"in epoch {saved_epoch + 1}" if saved_epoch < cfg.epochs else "after the last epoch"
        raise KeyboardInterrupt(f"interrupted {when}. {last_good(run_dir, saved_epoch)}") from None
    finally:
        ctrl_c.restore()
        torch.set_flush_denormal(False)
        restore_host_memory()
        bar.close()
        if log:
            log.close()
    return run_dir
