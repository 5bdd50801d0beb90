"""The `fashionssl` command: parses arguments, builds a Config, calls the library. No logic of its own."""

import argparse
import sys

from .augment import PRESETS
from .config import make_config, parse_option
from .encoders import ENCODERS
from .errors import UserError
from .methods import METHODS
from .optim import OPTIMIZERS

EPILOG = "Options also come from --config FILE.toml (same names, with _ for -); flags override the file."


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what and how to train (defaults: the main job, see README)")
    g.add_argument("--config", metavar="FILE.toml", help="read options from a TOML file")
    g.add_argument("--method", help=f"{', '.join(METHODS)} (default simclr)")
    g.add_argument("--encoder", help=f"{', '.join(ENCODERS)} (default cnn-bn)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--optimizer", help=f"{', '.join(OPTIMIZERS)} (default adamw)")
    g.add_argument("--lr", type=float, help="peak learning rate after warm-up")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--warmup-epochs", type=float)
    g.add_argument("--augment", help=f"augmentation preset: {', '.join(PRESETS)} (seed = the blog's recipe)")
    g.add_argument("--aug", action="append", default=[], metavar="KEY=VALUE",
                   help="override one augmentation field, e.g. --aug crop_scale=[0.3,1.0] (repeatable)")
    g.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, e.g. --opt temperature=0.1 (repeatable)")
    g.add_argument("--precision", help="auto (bf16 where native), fp32, bf16")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, help="NHWC memory format (default on)")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    g.add_argument("--seed", type=int, help="fixes init, data order and augmentation (default 0)")
    g.add_argument("--data-dir", help="folder with the four Fashion-MNIST IDX files (.gz or raw)")
    g.add_argument("--val-size", type=int, help="validation images carved from the training set (default 5000)")
    g.add_argument("--train-subset", type=int, metavar="N", help="train on the first N images only (quick trials)")
    g.add_argument("--knn-every", type=int, metavar="EPOCHS", help="kNN monitor interval, 0 = off (default 1)")
    g.add_argument("--out", help="run directory (default runs/<method>-<encoder>-<time>)")


def config_from_args(args: argparse.Namespace):
    flags = {k: getattr(args, k) for k in (
        "method", "encoder", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "warmup_epochs", "augment",
        "precision", "channels_last", "compile", "device", "seed", "data_dir", "val_size", "train_subset",
        "knn_every", "out")}
    flags["method_options"] = dict(parse_option(o) for o in args.opt) or None
    flags["augment_options"] = dict(parse_option(o) for o in args.aug) or None
    return make_config(args.config, **flags)


def label_fractions_from_args(args: argparse.Namespace):
    from .label_efficiency import LabelFractions, parse_fractions

    if args.label_fractions is None:
        if args.finetune or args.finetune_steps is not None:
            raise UserError("--finetune and --finetune-steps work on label subsets: add --label-fractions, "
                            "e.g. --label-fractions 0.01,0.1,1.0")
        return None
    steps = LabelFractions.steps if args.finetune_steps is None else args.finetune_steps
    return LabelFractions(parse_fractions(args.label_fractions), finetune=args.finetune, steps=steps)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fashionssl", description="Self-supervised representation learning on Fashion-MNIST.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="pretrain, then evaluate (the main job)", epilog=EPILOG)
    add_training_arguments(run)
    pre = sub.add_parser("pretrain", help="pretrain an encoder", epilog=EPILOG)
    add_training_arguments(pre)
    for p_ in (run, pre):
        p_.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run (its saved config is used)")
    ev = sub.add_parser("evaluate", help="linear probe and kNN of a checkpoint's frozen backbone")
    ev.add_argument("checkpoint", help="run directory or checkpoint file")
    ev.add_argument("--data-dir")
    ev.add_argument("--device")
    ev.add_argument("--out", metavar="FILE.json", help="results file (default: results.json beside the checkpoint)")
    ev.add_argument("--label-fractions", metavar="F,F,...",
                    help="also probe on stratified subsets of the labels, e.g. 0.01,0.1,1.0, beside the same encoder "
                         "trained from scratch on each subset")
    ev.add_argument("--finetune", action="store_true", help="with --label-fractions: also fine-tune the whole encoder")
    ev.add_argument("--finetune-steps", type=int, metavar="N",
                    help="optimisation steps (batch 256) of each fine-tuning and from-scratch run, whatever the "
                         "subset size (default 500)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        from .evaluate import evaluate_checkpoint, results_table
        from .train import pretrain

        if args.command == "evaluate":
            fractions = label_fractions_from_args(args)
            print(results_table(evaluate_checkpoint(args.checkpoint, args.data_dir, args.device, args.out, fractions)))
            return 0
        cfg = None if args.resume else config_from_args(args)
        run_dir = pretrain(cfg, resume=args.resume)
        print(f"run directory: {run_dir}")
        if args.command == "run":
            print(results_table(evaluate_checkpoint(run_dir)))
        return 0
    except UserError as e:
        print(f"fashionssl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fashionssl: interrupted; completed epochs are in the run's checkpoint.pt (continue with --resume RUN_DIR)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
