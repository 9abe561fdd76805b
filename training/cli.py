"""`cvae download | train | export | screening | calibrate | evaluate | ais`: the training commands.

The parser needs no PyTorch (training.configs holds every default), so each --help works on the base
install; a command that runs says when the `train` extra is missing."""

from __future__ import annotations

import argparse
import sys

from training.configs import (
    CRITIC_WEIGHT,
    MIN_REFERENCE,
    OUTLIER_LIMIT,
    STARTS,
    AisConfig,
    CriticConfig,
    ModelConfig,
    TrainConfig,
)
from training.data import DATA_DIR_HELP, DATA_DIR_VARIABLE, MIRRORS, MnistDataError, data_dir
from training.datasets import OWN_DATA_HELP, DataError
from training.flags import add_config_flags, at_least, config_from, critic_weight, margin, names, version
from training.handwriting import OUTLIERS_DIR_HELP

CRITIC_PREFIX = "critic-"
TRAIN_EXTRA = ("torch", "onnx", "tqdm", "matplotlib")  # what `pip install -e '.[train]'` brings


def critic_config(args: argparse.Namespace) -> CriticConfig:
    """The CriticConfig of `calibrate`'s --critic-* flags."""
    return config_from(args, CriticConfig, CRITIC_PREFIX)


TRAINED_ON = "the images the model was trained on with `cvae train --data`, instead of MNIST's (--data-dir)"
SEED_HELP = "binarization and noise seed (default %(default)s)"


def _on_model(parser: argparse.ArgumentParser, model_help: str) -> None:
    """The model directory and --data-dir, which every command on an exported model takes."""
    parser.add_argument("model_dir", help=model_help)
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)


def build_parser(prog: str = "cvae") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    download = commands.add_parser("download", help="fetch the four MNIST files and verify their MD5s")
    download.add_argument("--data-dir", help=f"where to put them (default: ${DATA_DIR_VARIABLE})")
    download.add_argument(
        "--mirror",
        action="append",
        dest="mirrors",
        metavar="URL",
        help="a base URL holding the four .gz files, tried in the order given (default: " + ", ".join(MIRRORS) + ")",
    )

    train = commands.add_parser("train", help="train a class-conditional VAE and save a checkpoint")
    train.add_argument("--data-dir", help=DATA_DIR_HELP)
    train.add_argument("--data", metavar="PATH", help=OWN_DATA_HELP)
    train.add_argument("--name", help="with --data: the model is exported as NAME-cvae (default: the data's name)")
    train.add_argument("--class-names", type=names, help="with --data: the classes' names, comma-separated, in order")
    train.add_argument("--out", default="runs/default/checkpoint.pt", help="checkpoint path (default %(default)s)")
    add_config_flags(train, ModelConfig)
    add_config_flags(train, TrainConfig)

    export = commands.add_parser("export", help="export a checkpoint to ONNX with its manifest")
    export.add_argument("checkpoint", help="checkpoint written by `train`")
    export.add_argument(
        "--out-dir", help="model directory (default models/mnist-cvae/VERSION, a version of the shipped repository)"
    )
    export.add_argument(
        "--version", type=version, default="1.0.0", help="model version for the manifest (default %(default)s)"
    )
    export.add_argument(
        "--force",
        action="store_true",
        help="replace the model directory if it exists, once the new one is complete (without it, export refuses)",
    )
    export.add_argument("--description", default="", help="what distinguishes this version, for the manifest")
    export.add_argument("--copy-checkpoint", action="store_true", help="also copy the checkpoint into the model folder")
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
    screening.add_argument("--data", metavar="PATH", help=TRAINED_ON)
    screening.add_argument("--images", type=at_least(1), default=5000, help="validation digits (default %(default)s)")
    screening.add_argument("--seed", type=int, default=0, help=SEED_HELP)

    calibrate = commands.add_parser(
        "calibrate",
        help="train the out-of-distribution critic and fit the background model on the training split, score the "
        "validation split through the service's code, into ood_critic.onnx, ood.npz and the manifest",
    )
    _on_model(calibrate, "model directory made by `export`")
    calibrate.add_argument("--data", metavar="PATH", help=TRAINED_ON)
    calibrate.add_argument(
        "--limit",
        type=at_least(MIN_REFERENCE, or_zero=True),
        default=0,
        help="only the first N validation images (default: all)",
    )
    calibrate.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    calibrate.add_argument(
        "--critic-from",
        metavar="MODEL_DIR",
        help="copy the critic of this model directory (trained on the same split) instead of training one: its "
        "weights are read back and written with this version's graph (both outputs, the larger weights as float16)",
    )
    calibrate.add_argument(
        "--critic-weight",
        type=critic_weight,
        help="the critic's weight against the distance's in the combined p-value, in [0, 1]; 0.5 weighs them alike "
        f"(default {CRITIC_WEIGHT}, chosen on validation digits against bench.ood's design sets; 0 for a model of "
        "grey levels, which has no critic)",
    )
    calibrate.add_argument(
        "--outliers-dir",
        help=f"{OUTLIERS_DIR_HELP}: the critic also learns from the training part of its handwriting (the held-out "
        "parts and math-operators stay out)",
    )
    calibrate.add_argument(
        "--critic-start",
        metavar="MODEL_DIR",
        help="fine-tune the critic of this model directory (trained on the same split; this one's own too) instead "
        "of training one from scratch; with it, a few --critic-epochs do",
    )
    critic = calibrate.add_argument_group(
        "the critic, when not --critic-from",
        "CriticConfig's fields: width is the channels and hidden units as multiples of 32, 64 and 128; "
        "num-outliers the made-up non-digits it learns from; train-limit the first N training digits (0: all); "
        "device cpu, cuda, or auto for a GPU when PyTorch sees one",
    )
    add_config_flags(
        critic, CriticConfig, CRITIC_PREFIX, {"num_outliers": "critic-outliers", "train_limit": "critic-limit"}
    )

    evaluate = commands.add_parser(
        "evaluate", help="score the test set, write metrics into the manifest and a MODEL_CARD.md"
    )
    _on_model(evaluate, "model directory made by `cvae export` (its checkpoint.pt draws the card's grids)")
    evaluate.add_argument(
        "--num-samples", type=at_least(2), default=5000, help="importance samples K per class (default %(default)s)"
    )
    evaluate.add_argument(
        "--limit", type=at_least(1, or_zero=True), default=0, help="score only the first N test images (default: all)"
    )
    evaluate.add_argument(
        "--seed", type=int, default=0, help="seed of the test binarization and the noise (default %(default)s)"
    )
    evaluate.add_argument(
        "--screen-samples",
        type=at_least(0),
        help="the service's screening: every class first gets this many samples, and only the classes within "
        "--margin nats of the best get all K (default: the model's own screening, from its manifest; 0: every "
        "class gets K)",
    )
    evaluate.add_argument(
        "--margin", type=margin, help="screening margin in nats, above 0 (default: the model's own screening's)"
    )
    evaluate.add_argument(
        "--data", metavar="PATH", help="the test images instead of MNIST's, in any form `cvae train --data` reads"
    )
    evaluate.add_argument(
        "--outliers",
        action="append",
        metavar="PATH",
        help="images not of the model's kind (a data set in any form `cvae train --data` reads), assessed at the "
        "service's defaults beside the test images: the share flagged and the AUROC (repeatable)",
    )
    evaluate.add_argument(
        "--outlier-limit",
        type=at_least(1),
        default=OUTLIER_LIMIT,
        help="the first N images of each (default %(default)s)",
    )
    evaluate.add_argument("--no-card", action="store_true", help="print the metrics only")

    ais = commands.add_parser(
        "ais", help="compare the service's default answers on test images with annealed importance sampling"
    )
    _on_model(ais, "model directory holding checkpoint.pt and manifest.json")
    ais.add_argument("--limit", type=at_least(1), default=100, help="the first N test images (default %(default)s)")
    ais.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    chains = ais.add_argument_group(
        "the chains", "AisConfig's fields; where the chains start: " + "; ".join(f"{k}: {v}" for k, v in STARTS.items())
    )
    add_config_flags(chains, AisConfig, aliases={"num_chains": "chains", "num_temperatures": "temperatures"})
    return parser


def run(args: argparse.Namespace, prog: str) -> int:
    """Run the parsed command."""
    if args.command == "download":
        from training.data import download

        for path in download(data_dir(args.data_dir), tuple(args.mirrors or MIRRORS)):
            print(f"ok {path}")
    elif args.command == "train":
        from training.train import run as train

        mnist = data_dir(args.data_dir) if args.data is None else None
        train(
            config_from(args, ModelConfig),
            config_from(args, TrainConfig),
            mnist,
            args.out,
            args.data,
            args.name,
            args.class_names,
        )
    elif args.command == "export":
        from training.export import command as export_version

        return export_version(args, prog)
    elif args.command == "screening":
        from service.engine.adaptive import screening_for
        from training.datasets import training_set
        from training.screening import run as choose_screening

        entry = choose_screening(args.model_dir, training_set(args.data_dir, args.data), args.images, args.seed)
        print(f"{screening_for({'screening': entry}).text()}, written to the manifest")
    elif args.command == "calibrate":
        from training.calibrate import run as calibrate

        calibrate(
            args.model_dir,
            args.data_dir,
            args.limit,
            args.seed,
            critic_config(args),
            args.critic_from,
            args.critic_weight,
            args.outliers_dir,
            args.critic_start,
            args.data,
        )
    elif args.command == "evaluate":
        from training.evaluate import run as evaluate

        evaluate(
            args.model_dir,
            data_dir(args.data_dir) if args.data is None else None,
            test_data=args.data,
            num_samples=args.num_samples,
            limit=args.limit,
            seed=args.seed,
            card=not args.no_card,
            screen_samples=args.screen_samples,
            margin=args.margin,
            outliers=args.outliers or [],
            outlier_limit=args.outlier_limit,
        )
    elif args.command == "ais":
        from training.ais import run as compare_with_ais

        compare_with_ais(args.model_dir, data_dir(args.data_dir), args.limit, config_from(args, AisConfig), args.seed)
    return 0


HINTS = {  # what a command's missing file usually means
    "export": "name a checkpoint written by `cvae train --out`",
    "evaluate": "the model directory needs its checkpoint.pt: export with --copy-checkpoint",
    "ais": "the model directory needs its checkpoint.pt: export with --copy-checkpoint",
}


def main(argv: list[str] | None = None, prog: str = "cvae") -> int:
    args = build_parser(prog).parse_args(argv)
    from service.engine.runtime import ModelLoadError  # a model directory that is not one: no manifest, bad files

    try:
        return run(args, prog)
    except (MnistDataError, ModelLoadError, DataError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:  # a checkpoint or model file named that is not there
        print(f"error: {error.filename} does not exist: {HINTS.get(args.command, 'check the path')}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in TRAIN_EXTRA:
            raise
        print(f"{prog} {args.command} needs the train extra ({error}): pip install -e '.[train]'", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
