"""cvae serve | score | train | export | screening | calibrate | evaluate | ais | download

Each command's own --help lists its options, their choices and defaults, on the base install. `serve`
needs nothing more; `score` needs the `batch` extra, the others the `train` extra (pip install -e '.[train]').
"""

from __future__ import annotations

import sys

COMMANDS = {
    "serve": "serve the model over HTTP (default: the shipped model on 127.0.0.1:8000)",
    "score": "score a data set (IDX, .npy, .npz, Parquet, PNG folder) on Ray Data into Parquet",
    "train": "train a class-conditional VAE on MNIST and save a checkpoint",
    "export": "export a checkpoint to ONNX with its manifest",
    "screening": "choose the model's screening for adaptive scoring on the validation split",
    "calibrate": "train the out-of-distribution critic and calibrate the assessment on the validation split",
    "evaluate": "score the test set; write metrics into the manifest and MODEL_CARD.md",
    "ais": "compare the service's default answers on test images with annealed importance sampling",
    "download": "fetch the four MNIST files and verify their MD5s",
}


def usage() -> str:
    lines = ["usage: cvae <command> [options]", "", __doc__.strip().split("\n\n", 1)[1], "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"cvae: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if command == "serve":
        from service.cli import main as serve

        return serve(rest, prog="cvae serve")
    if command == "score":
        from batch.cli import main as score

        return score(rest, prog="cvae score")
    from training.cli import main as training  # says itself when a command needs the train extra

    return training([command, *rest], prog="cvae")
