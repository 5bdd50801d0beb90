"""The one training loop, for every method: data order, augmentation, schedule, precision,
checkpoints, metrics, progress and the kNN monitor. It never asks which method it runs.

Reproducibility: `seed` fixes the model's initialisation; each epoch's data order and augmentation
draw from generators seeded by (seed, epoch), so an epoch replays identically whether or not the
run was interrupted before it, and resuming from an epoch checkpoint needs no RNG state.
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
from .config import Config, config_from_dict
from .data import FashionMNIST, load_fashion_mnist
from .device import autocast_dtype, resolve_device
from .errors import UserError
from .evaluate import accuracy, extract_features, knn_predict
from .methods import Method, build_model
from .optim import build_optimizer
from .runlog import MetricsLog, versions, write_json
from .schedules import warmup_cosine


def stream_seed(seed: int, epoch: int, stream: int) -> int:
    """A well-mixed 63-bit seed for one random stream (0: data order, 1: augmentation) of one epoch."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, np.uint64)[0] >> 1)


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
        try:
            saved = json.loads(config_file.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read {config_file}: {e}") from None
        return None, config_from_dict(saved, str(config_file)), run / "checkpoint.pt"
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


def knn_monitor(model: Method, data: FashionMNIST, aug: augment.AugmentConfig, cfg: Config,
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
    if resume is not None:
        state, cfg, checkpoint = resume_point(resume)
        run_dir = checkpoint.parent
    else:
        cfg = cfg or Config()
        run_dir = new_run_dir(cfg)
    device = resolve_device(cfg.device)
    amp = autocast_dtype(cfg.precision, device)
    # Tiny gradients turn into denormal floats, which x86 CPUs process up to 7x slower (measured:
    # fp32 steps swung between 180 and 1,300 images/s); flushing them to zero costs no accuracy.
    torch.set_flush_denormal(True)
    data = load_fashion_mnist(cfg.data_dir, cfg.val_size, train_subset=cfg.train_subset)
    aug = augment.make_config(cfg.augment, **cfg.augment_options)
    n, batch = len(data.train), cfg.batch_size
    if batch > n:
        raise UserError(f"batch_size {batch} is larger than the {n} training images; lower --batch-size")
    steps_per_epoch = n // batch  # the last incomplete batch is dropped: contrastive losses want full batches
    total_steps = steps_per_epoch * cfg.epochs
    lrs = warmup_cosine(cfg.lr, total_steps, round(cfg.warmup_epochs * steps_per_epoch), cfg.final_lr).tolist()

    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg.optimizer, model, cfg.lr, cfg.weight_decay)
    start_epoch = 0
    if state is not None:
        load_into(model, state["model"], checkpoint, f"method {cfg.method!r} with encoder {cfg.encoder!r}")
        load_into(optimizer, state.get("optimizer"), checkpoint, f"optimizer {cfg.optimizer!r} for this model")
        start_epoch = state["epoch"]
    else:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create run directory {run_dir}: {e.strerror}") from None
        write_json(run_dir / "config.json", dataclasses.asdict(cfg))
        write_json(run_dir / "versions.json", versions(device))
    forward = torch.compile(model) if cfg.compile else model

    images, labels = data.train.images.to(device), data.train.labels.to(device)
    # Lines past the last checkpoint (left by a killed attempt) are dropped: those steps run again.
    log = MetricsLog(run_dir, resume_step=start_epoch * steps_per_epoch)
    bar = tqdm(total=(cfg.epochs - start_epoch) * steps_per_epoch * batch, unit="img", unit_scale=True,
               dynamic_ncols=True, mininterval=1.0, disable=None)
    saved_epoch = start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            order = torch.randperm(n, generator=torch.Generator().manual_seed(stream_seed(cfg.seed, epoch, 0)))
            order = order.to(device)
            aug_generator = torch.Generator(device).manual_seed(stream_seed(cfg.seed, epoch, 1))
            epoch_start, window_start = time.perf_counter(), time.perf_counter()
            loss_sum, extras_sum = 0.0, {}
            bar.set_description(f"epoch {epoch + 1}/{cfg.epochs}")
            for i in range(steps_per_epoch):
                step = epoch * steps_per_epoch + i
                index = order[i * batch:(i + 1) * batch]
                views = augment.views(images[index], aug, aug_generator, model.view_spec)
                if cfg.channels_last:
                    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                for group in optimizer.param_groups:
                    group["lr"] = lrs[step]
                with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                    loss, extras = forward(views, labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                model.after_step(step, total_steps)

                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise UserError(f"loss became {loss_value} at step {step + 1} (epoch {epoch + 1}); run stopped. "
                                    f"{last_good(run_dir, epoch)} Try a lower --lr.")
                loss_sum += loss_value
                for name, value in extras.items():
                    extras_sum[name] = extras_sum.get(name, 0.0) + value.detach().float()
                bar.update(batch)
                if (step + 1) % cfg.log_every == 0:
                    now = time.perf_counter()
                    speed = cfg.log_every * batch / (now - window_start)
                    window_start = now
                    bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lrs[step]:.2e}", refresh=False)
                    log.log(step + 1, loss=loss_value, lr=lrs[step], images_per_s=speed,
                            **{k: float(v) for k, v in extras.items()})

            epoch_time = time.perf_counter() - epoch_start
            summary = {"epoch": epoch + 1, "epoch_loss": loss_sum / steps_per_epoch, "epoch_seconds": epoch_time,
                       "epoch_images_per_s": steps_per_epoch * batch / epoch_time,
                       **{f"epoch_{name}": value.item() / steps_per_epoch for name, value in extras_sum.items()}}
            if cfg.knn_every and ((epoch + 1) % cfg.knn_every == 0 or epoch + 1 == cfg.epochs) and len(data.val):
                summary["knn_val_acc"] = knn_monitor(model, data, aug, cfg, device, amp)
            if not all_finite(model):
                raise UserError(f"weights or BatchNorm statistics became non-finite during epoch {epoch + 1} (the loss "
                                f"stayed finite); run stopped. {last_good(run_dir, epoch)} Try a lower --lr.")
            save_checkpoint(run_dir / "checkpoint.pt", {
                "config": dataclasses.asdict(cfg), "epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            })
            saved_epoch = epoch + 1
            log.log((epoch + 1) * steps_per_epoch, **summary)
            bar.write(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
            for warning in model.epoch_warnings(summary):
                bar.write(f"warning: {warning}")
    except KeyboardInterrupt:  # Ctrl-C: say where the completed epochs are
        raise KeyboardInterrupt(f"interrupted in epoch {saved_epoch + 1}. {last_good(run_dir, saved_epoch)}") from None
    finally:
        bar.close()
        log.close()
    return run_dir
