"""The `fashionssl` command: parses arguments, builds a Config, calls the library. No logic of its own."""

import argparse
import sys

from .augment import PRESETS
from .config import DEFAULT_LR, METHOD_LR, Config, make_config, parse_option
from .distributed import is_main_process, torchrun_process_group
from .encoders import ENCODERS
from .errors import UserError
from .methods import METHODS
from .optim import OPTIMIZERS

EPILOG = "Options also come from --config FILE.toml (same names, with _ for -); flags override the file."
DATA_HELP = ("the images: a folder of IDX files, an .npz file (x_train, y_train[, x_test, y_test]), a folder "
             "root/train/<class>/*.png [root/test/...] or a folder of unlabelled images (default: Fashion-MNIST)")


def add_data_override(parser: argparse.ArgumentParser) -> None:
    """--data or --data-dir for commands that read a run: other data than it was trained on, or
    Fashion-MNIST from another folder (e.g. a run moved to a machine that keeps the files elsewhere)."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--data", help="the images to use instead of the run's own (same layouts as pretrain --data)")
    g.add_argument("--data-dir", help="Fashion-MNIST from this folder of the four IDX files, instead of the run's own "
                                      "data")


def add_training_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what and how to train (defaults: the main job, see README)")
    g.add_argument("--config", metavar="FILE.toml", help="read options from a TOML file")
    g.add_argument("--method", help=f"{', '.join(METHODS)} (default {Config.method})")
    g.add_argument("--encoder", help=f"{', '.join(ENCODERS)} (default {Config.encoder})")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--optimizer", help=f"{', '.join(OPTIMIZERS)} (default {Config.optimizer})")
    g.add_argument("--lr", type=float, help="peak learning rate after warm-up (default: the method's, "
                   f"{DEFAULT_LR:g}; {', '.join(f'{m} {lr:g}' for m, lr in METHOD_LR.items())})")
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
    g.add_argument("--data", help=DATA_HELP)
    g.add_argument("--data-dir", help="folder with the four IDX files (.gz or raw), as --data reads it")
    g.add_argument("--val-size", type=int, help="labelled validation images carved from the training set "
                                                "(default 10%%, at most 5000)")
    g.add_argument("--train-subset", type=int, metavar="N", help="train on the first N images only (quick trials)")
    g.add_argument("--knn-every", type=int, metavar="EPOCHS", help="kNN monitor interval, 0 = off (default 1)")
    g.add_argument("--out", help="run directory (default runs/<method>-<encoder>-<time>)")


def training_flags(args: argparse.Namespace) -> dict:
    """The config values given as flags (None: not given)."""
    flags = {k: getattr(args, k) for k in (
        "method", "encoder", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "warmup_epochs", "augment",
        "precision", "channels_last", "compile", "device", "seed", "data", "data_dir", "val_size", "train_subset",
        "knn_every", "out")}
    flags["method_options"] = dict(parse_option(o) for o in args.opt) or None
    flags["augment_options"] = dict(parse_option(o) for o in args.aug) or None
    return flags


def config_from_args(args: argparse.Namespace):
    """A new run's config; with --resume, the saved one is used and options may not be given,
    so that a resumed run is the run that was started (same method, encoder, schedule, seed)."""
    if not args.resume:
        return make_config(args.config, **training_flags(args))
    given = [f"--{k.replace('_', '-')}" for k, v in training_flags(args).items() if v is not None]
    given += ["--config"] * bool(args.config)
    if given:
        raise UserError(f"--resume {args.resume} continues that run with its saved config; "
                        f"drop {', '.join(given)} (or start a new run with another --out)")
    return None


def add_label_fraction_arguments(parser: argparse.ArgumentParser) -> None:
    """The label-efficiency options, shared by `evaluate` and `bench`."""
    parser.add_argument("--label-fractions", metavar="F,F,...",
                        help="also probe on stratified subsets of the labels, e.g. 0.01,0.1,1.0, beside the same "
                             "encoder trained from scratch on each subset")
    parser.add_argument("--finetune", action="store_true",
                        help="with --label-fractions: also fine-tune the whole encoder")
    parser.add_argument("--finetune-steps", type=int, metavar="N",
                        help="optimisation steps (batch 256) of each fine-tuning and from-scratch run, whatever the "
                             "subset size (default 500)")
    parser.add_argument("--fixmatch", action="store_true",
                        help="with --label-fractions: also fine-tune semi-supervised (FixMatch), learning from every "
                             "training image without its label too, from the pretrained encoder and from scratch "
                             "(two runs of 3,000 steps: 10-14.5 minutes per fraction on 2 cores of an Intel Xeon)")
    parser.add_argument("--fixmatch-steps", type=int, metavar="N",
                        help="optimisation steps of each FixMatch run (default 3000)")
    parser.add_argument("--label-seed", type=int, metavar="N",
                        help="seed of the label subsets and of the classifiers trained on them (default 0); rerun "
                             "with others to see how much the choice of labelled images moves the results")


def label_fractions_from_args(args: argparse.Namespace):
    from .label_efficiency import LabelFractions, parse_fractions

    if args.label_fractions is None:
        given = [option for option, value in (("--finetune", args.finetune), ("--finetune-steps", args.finetune_steps),
                                              ("--fixmatch", args.fixmatch), ("--fixmatch-steps", args.fixmatch_steps),
                                              ("--label-seed", args.label_seed))
                 if value is not None and value is not False]
        if given:
            raise UserError(f"{' and '.join(given)} work on label subsets: add --label-fractions, "
                            "e.g. --label-fractions 0.01,0.1,1.0")
        return None
    if args.fixmatch_steps is not None and not args.fixmatch:
        raise UserError("--fixmatch-steps sets the steps of --fixmatch: add --fixmatch")
    steps = LabelFractions.steps if args.finetune_steps is None else args.finetune_steps
    fixmatch_steps = LabelFractions.fixmatch_steps if args.fixmatch_steps is None else args.fixmatch_steps
    seed = LabelFractions.seed if args.label_seed is None else args.label_seed
    return LabelFractions(parse_fractions(args.label_fractions), finetune=args.finetune, steps=steps,
                          fixmatch=args.fixmatch, fixmatch_steps=fixmatch_steps, seed=seed)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fashionssl", description="Self-supervised representation learning on small "
                                                               "images (Fashion-MNIST by default).")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="pretrain, then evaluate (the main job)", epilog=EPILOG)
    add_training_arguments(run)
    pre = sub.add_parser("pretrain", help="pretrain an encoder", epilog=EPILOG)
    add_training_arguments(pre)
    for p_ in (run, pre):
        p_.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run (its saved config is used)")
    ev = sub.add_parser("evaluate", help="linear probe and kNN of a checkpoint's frozen backbone")
    ev.add_argument("checkpoint", help="run directory or checkpoint file")
    add_data_override(ev)
    ev.add_argument("--device")
    ev.add_argument("--out", metavar="FILE.json", help="results file (default: results.json beside the checkpoint)")
    add_label_fraction_arguments(ev)
    bench = sub.add_parser("bench", help="compare methods at one budget against raw-pixel and untrained baselines",
                           description="Pretrain and evaluate each method with the same data, augmentation, encoder "
                                       "and epochs (default: every method, 10 epochs of the main job's recipe); writes "
                                       "comparison.md and comparison.json. Rerunning continues an interrupted bench.")
    bench.add_argument("--methods", help=f"comma-separated, from: {', '.join(METHODS)} (default: all)")
    bench.add_argument("--config", metavar="FILE.toml", help="shared config keys, `methods = [...]` and "
                                                             "[per_method.NAME] tables of per-method overrides")
    for flag, kind in (("--encoder", str), ("--epochs", int), ("--batch-size", int), ("--lr", float),
                       ("--data", str), ("--data-dir", str), ("--device", str), ("--seed", int), ("--val-size", int),
                       ("--train-subset", int)):
        bench.add_argument(flag, type=kind)
    bench.add_argument("--seeds", metavar="S,S,...", help="train every method once per seed (e.g. 0,1,2) into "
                                                          "OUT/METHOD/seed-S: mean ± std, and paired differences "
                                                          "against SimCLR")
    add_label_fraction_arguments(bench)
    bench.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                       help="also write OUT/report/report.html comparing the runs (default on)")
    bench.add_argument("--out", default="runs/bench", help="bench directory, one run directory per method (default runs/bench)")
    rep = sub.add_parser("report", help="an offline HTML report of what one or more runs learned (and a comparison)")
    rep.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    rep.add_argument("--out", metavar="DIR", help="report folder (default: RUN_DIR/report, runs/report-<time> for several runs)")
    prev = sub.add_parser("augment-preview", help="a PNG grid of augmented views, to check a recipe before training")
    prev.add_argument("--config", metavar="FILE.toml", help="take augment and [augment_options] from a TOML config")
    prev.add_argument("--augment", help=f"augmentation preset: {', '.join(PRESETS)}")
    prev.add_argument("--aug", action="append", default=[], metavar="KEY=VALUE", help="override one augmentation field (repeatable)")
    prev.add_argument("--out", default="augment-preview.png", metavar="FILE.png", help="(default augment-preview.png)")
    prev.add_argument("--images", type=int, default=6, metavar="N", help="images, one class each (default 6)")
    prev.add_argument("--views", type=int, default=8, metavar="V", help="random views of each (default 8)")
    prev.add_argument("--seed", type=int, default=0)
    exp = sub.add_parser("export", help="backbone weights as safetensors and train/val/test embeddings as .npy")
    exp.add_argument("checkpoint", metavar="RUN_DIR", help="run directory or checkpoint file")
    exp.add_argument("--out", metavar="DIR", help="export folder (default: RUN_DIR/export)")
    emb = sub.add_parser("embed", help="embeddings of new images with a trained or exported backbone, as .npy")
    emb.add_argument("model", metavar="RUN_DIR_OR_EXPORT", help="run directory, checkpoint file or export folder")
    emb.add_argument("images", metavar="IMAGES", help="a folder of images (read in name order), an .npz file "
                                                     "(its x or x_train array) or an IDX images file")
    emb.add_argument("-o", "--out", required=True, metavar="FILE.npy",
                     help="(N, feature_dim) float32, one row per image")
    prev.add_argument("--data", help=DATA_HELP)
    prev.add_argument("--data-dir")
    for p_ in (rep, exp):
        add_data_override(p_)
    for p_ in (rep, exp, emb):
        p_.add_argument("--device")
    return p


def augment_preview(args: argparse.Namespace) -> str:
    from .report import preview_augmentations

    overrides = dict(parse_option(o) for o in args.aug) or None
    cfg = make_config(args.config, augment=args.augment, augment_options=overrides, data=args.data, data_dir=args.data_dir)
    return str(preview_augmentations(cfg, args.out, args.images, args.views, args.seed))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        from .evaluate import evaluate_checkpoint, results_table
        from .train import pretrain

        if args.command == "bench":
            from .bench import bench, parse_seeds

            flags = {k: getattr(args, k) for k in ("encoder", "epochs", "batch_size", "lr", "data", "data_dir",
                                                   "device", "seed", "val_size", "train_subset")}
            methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
            seeds = parse_seeds(args.seeds) if args.seeds is not None else None
            print(bench(args.out, methods, args.config, flags, args.report, label_fractions_from_args(args), seeds))
            return 0
        if args.command == "evaluate":
            fractions = label_fractions_from_args(args)
            print(results_table(evaluate_checkpoint(args.checkpoint, args.data, args.device, args.out, fractions,
                                                                  args.data_dir)))
            return 0
        if args.command == "report":
            from .report import write_report
            print(f"report: {write_report(args.run_dirs, args.out, args.data, args.device, data_dir=args.data_dir)}")
            return 0
        if args.command == "augment-preview":
            print(f"augmentation preview: {augment_preview(args)}")
            return 0
        if args.command == "export":
            from .export import export_run
            print(f"exported to {export_run(args.checkpoint, args.out, args.data, args.device, args.data_dir)}")
            return 0
        if args.command == "embed":
            from .export import embed
            print(f"embeddings: {embed(args.model, args.images, args.out, args.device)}")
            return 0
        cfg = config_from_args(args)  # None with --resume (the saved config is used)
        with torchrun_process_group():  # several processes when started by torchrun (docs/distributed.md)
            run_dir = pretrain(cfg, resume=args.resume)
            if not is_main_process():  # evaluation and its output are rank 0's
                return 0
        print(f"run directory: {run_dir}")
        if args.command == "run":
            print(results_table(evaluate_checkpoint(run_dir)))
        return 0
    except UserError as e:
        print(f"fashionssl: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine, not the code: say a full disk or a vanished directory in one line too
        print(f"fashionssl: error: I/O error on {e.filename or 'a run file'}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # train.py adds where the completed epochs are
        print(f"fashionssl: error: {e or 'interrupted; files already written are intact'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
