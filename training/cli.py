"""`cvae download | train | export | screening | calibrate | evaluate | ais`: the training commands."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from training.data import DATA_DIR_HELP, DATA_DIR_VARIABLE, MnistDataError, data_dir

CRITIC_PREFIX = "critic-"


def _dest(prefix: str, name: str) -> str:
    """The argparse attribute of the flag --PREFIX-NAME for a config field `name`."""
    return (prefix + name).replace("-", "_")


def _add_config_flags(parser, config_class, prefix: str = "", aliases: dict[str, str] | None = None) -> None:
    """A flag --PREFIXFIELD-NAME for each field of the dataclass `config_class`, defaulting to the
    field's default; `aliases` adds a second, shorter flag for some fields (field name -> flag)."""
    aliases = aliases or {}
    for f in fields(config_class):
        default = f.default
        names = ["--" + prefix + f.name.replace("_", "-")] + (["--" + aliases[f.name]] if f.name in aliases else [])
        options = {"dest": _dest(prefix, f.name), "default": default, "help": f"default {default}"}
        if isinstance(default, bool):
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **options)
        elif isinstance(default, tuple):
            parser.add_argument(*names, type=type(default[0]), nargs="+", **options)
        else:
            parser.add_argument(*names, type=type(default), **options)


def _config_from(args: argparse.Namespace, config_class, prefix: str = ""):
    values = {f.name: getattr(args, _dest(prefix, f.name)) for f in fields(config_class)}
    for name, value in values.items():
        if isinstance(value, list):
            values[name] = tuple(value)
    return config_class(**values)


def _critic_weight(text: str) -> float:
    """--critic-weight's value, refused by argparse (naming the flag) unless a number in [0, 1]."""
    from service.ood import critic_weight_of

    try:
        value: object = float(text)
    except ValueError:
        value = text  # not a number: critic_weight_of says so
    try:
        return critic_weight_of(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from error


def critic_config(args: argparse.Namespace):
    """The CriticConfig of `calibrate`'s --critic-* flags."""
    from training.critic import CriticConfig

    return _config_from(args, CriticConfig, CRITIC_PREFIX)


SEED_HELP = "binarization and noise seed (default %(default)s)"


def _on_model(parser: argparse.ArgumentParser, model_help: str) -> None:
    """The model directory and --data-dir, which every command on an exported model takes."""
    parser.add_argument("model_dir", help=model_help)
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)


def build_parser(prog: str = "cvae") -> argparse.ArgumentParser:
    from training.anneal import STARTS, AisConfig
    from training.calibrate import CRITIC_WEIGHT
    from training.critic import CriticConfig
    from training.model import ModelConfig
    from training.train import TrainConfig

    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    download = commands.add_parser("download", help="fetch the four MNIST files and verify their MD5s")
    download.add_argument("--data-dir", help=f"where to put them (default: ${DATA_DIR_VARIABLE})")

    train = commands.add_parser("train", help="train a class-conditional VAE and save a checkpoint")
    train.add_argument("--data-dir", help=DATA_DIR_HELP)
    train.add_argument("--out", default="runs/default/checkpoint.pt", help="checkpoint path (default %(default)s)")
    _add_config_flags(train, ModelConfig)
    _add_config_flags(train, TrainConfig)

    export = commands.add_parser("export", help="export a checkpoint to ONNX with its manifest")
    export.add_argument("checkpoint", help="checkpoint written by `train`")
    export.add_argument(
        "--out-dir", help="model directory (default models/mnist-cvae/VERSION, a version of the shipped repository)"
    )
    export.add_argument("--version", default="1.0.0", help="model version for the manifest (default %(default)s)")
    export.add_argument("--description", default="", help="what distinguishes this version, for the manifest")
    export.add_argument(
        "--copy-checkpoint", action="store_true", help="also copy the checkpoint into the model directory"
    )
    export.add_argument(
        "--data-dir",
        help="folder with the MNIST IDX files: with it, export also chooses the model's screening and calibrates "
        "the out-of-distribution assessment (as `screening` and then `calibrate` do); without it, the model has "
        "neither until those commands run",
    )

    screening = commands.add_parser(
        "screening",
        help="choose the model's screening for adaptive scoring on validation digits, through the service's code, "
        "into the manifest (run it before `calibrate`, whose reference is scored with it)",
    )
    _on_model(screening, "model directory made by `export`")
    screening.add_argument("--images", type=int, default=5000, help="validation digits (default %(default)s)")
    screening.add_argument("--seed", type=int, default=0, help=SEED_HELP)

    calibrate = commands.add_parser(
        "calibrate",
        help="train the out-of-distribution critic and fit the background model on the training split, score the "
        "validation split through the service's code, into ood_critic.onnx, ood.npz and the manifest",
    )
    _on_model(calibrate, "model directory made by `export`")
    calibrate.add_argument("--limit", type=int, default=0, help="only the first N validation images (default: all)")
    calibrate.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    calibrate.add_argument(
        "--critic-from",
        metavar="MODEL_DIR",
        help="copy the critic of this model directory (trained on the same split) instead of training one: its "
        "weights are read back and written with this version's graph (both outputs, the larger weights as float16)",
    )
    calibrate.add_argument(
        "--critic-weight",
        type=_critic_weight,
        default=CRITIC_WEIGHT,
        help="the critic's weight against the distance's in the combined p-value, in [0, 1]; 0.5 weighs them alike "
        "(default %(default)s, chosen on validation digits against bench.ood's design sets)",
    )
    critic = calibrate.add_argument_group(
        "the critic, when not --critic-from",
        "CriticConfig's fields: width is the channels and hidden units as multiples of 32, 64 and 128; "
        "num-outliers the made-up non-digits it learns from; train-limit the first N training digits (0: all); "
        "device cpu, cuda, or auto for a GPU when PyTorch sees one",
    )
    _add_config_flags(
        critic, CriticConfig, CRITIC_PREFIX, {"num_outliers": "critic-outliers", "train_limit": "critic-limit"}
    )

    evaluate = commands.add_parser(
        "evaluate", help="score the test set, write metrics into the manifest and a MODEL_CARD.md"
    )
    _on_model(evaluate, "model directory holding checkpoint.pt and manifest.json")
    evaluate.add_argument(
        "--num-samples", type=int, default=5000, help="importance samples K per class (default %(default)s)"
    )
    evaluate.add_argument("--limit", type=int, default=0, help="score only the first N test images (default: all)")
    evaluate.add_argument("--batch-size", type=int, default=1, help="images per model call (default %(default)s)")
    evaluate.add_argument(
        "--seed", type=int, default=0, help="seed of the test binarization and the noise (default %(default)s)"
    )
    evaluate.add_argument(
        "--screen-samples",
        type=int,
        default=0,
        help="adaptive: screen every class with this many samples, then give all K only to classes within "
        "--margin nats of the best (default 0: every class gets K)",
    )
    evaluate.add_argument("--margin", type=float, default=20.0, help="screening margin in nats (default %(default)s)")
    evaluate.add_argument("--no-card", action="store_true", help="print the metrics only")

    ais = commands.add_parser(
        "ais", help="compare the service's default answers on test images with annealed importance sampling"
    )
    _on_model(ais, "model directory holding checkpoint.pt and manifest.json")
    ais.add_argument("--limit", type=int, default=100, help="the first N test images (default %(default)s)")
    ais.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    ais.add_argument("--chains", type=int, default=AisConfig.num_chains, help="default %(default)s")
    ais.add_argument("--temperatures", type=int, default=AisConfig.num_temperatures, help="default %(default)s")
    ais.add_argument("--leapfrog-steps", type=int, default=AisConfig.leapfrog_steps, help="default %(default)s")
    ais.add_argument(
        "--start",
        choices=list(STARTS),
        default=AisConfig.start,
        help="where the chains start: " + "; ".join(f"{name}: {text}" for name, text in STARTS.items()),
    )
    return parser


def main(argv: list[str] | None = None, prog: str = "cvae") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        if args.command == "download":
            from training.data import download

            for path in download(data_dir(args.data_dir)):
                print(f"ok {path}")
        elif args.command == "train":
            from training.model import ModelConfig
            from training.train import TrainConfig, run

            run(_config_from(args, ModelConfig), _config_from(args, TrainConfig), data_dir(args.data_dir), args.out)
        elif args.command == "ais":
            from training.ais import run as compare_with_ais
            from training.anneal import AisConfig

            config = AisConfig(
                num_chains=args.chains,
                num_temperatures=args.temperatures,
                leapfrog_steps=args.leapfrog_steps,
                start=args.start,
            )
            compare_with_ais(args.model_dir, data_dir(args.data_dir), args.limit, config, args.seed)
        elif args.command == "export":
            import shutil

            from training.export import MODEL_NAME, export
            from training.model import Checkpoint

            out_dir = args.out_dir or f"models/{MODEL_NAME}/{args.version}"
            out = export(Checkpoint.load(args.checkpoint), out_dir, args.version, args.description)
            if args.copy_checkpoint:
                shutil.copyfile(args.checkpoint, Path(out) / "checkpoint.pt")
            print(f"exported {out}")
            if args.data_dir:  # only when asked: both score 5,000 validation images (minutes)
                from training.calibrate import run as calibrate
                from training.data import load_mnist
                from training.screening import run as choose_screening

                choose_screening(out, load_mnist(args.data_dir))
                calibrate(out, args.data_dir)
        elif args.command == "screening":
            from service.rounds import screening_for

            from training.data import load_mnist
            from training.screening import run as choose_screening

            entry = choose_screening(args.model_dir, load_mnist(data_dir(args.data_dir)), args.images, args.seed)
            print(f"{screening_for({'screening': entry}).text()}, written to the manifest")
        elif args.command == "calibrate":
            from training.calibrate import run as calibrate

            calibrate(
                args.model_dir,
                data_dir(args.data_dir),
                args.limit,
                args.seed,
                critic_config(args),
                args.critic_from,
                args.critic_weight,
            )
        elif args.command == "evaluate":
            from training.evaluate import run as evaluate

            evaluate(
                args.model_dir,
                data_dir(args.data_dir),
                num_samples=args.num_samples,
                limit=args.limit,
                batch_size=args.batch_size,
                seed=args.seed,
                card=not args.no_card,
                screen_samples=args.screen_samples,
                margin=args.margin,
            )
    except MnistDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
