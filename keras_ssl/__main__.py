"""`python -m keras_ssl embed|predict MODEL IMAGES [--out FILE]`.

Runs an export (`keras_ssl.export.export_saved_model`), a `.keras` file or
a published checkpoint (a name of `keras_ssl.pretrained.CHECKPOINTS`) over
a folder of image files or a `.npy` / `.npz` array of images, and writes
one row per image (`keras_ssl.inference`): its embedding, or its class and
probabilities.
"""

import argparse
import sys


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m keras_ssl", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    embed = commands.add_parser(
        "embed", help="Write every image's embedding (.csv, .npz, .parquet)."
    )
    predict = commands.add_parser(
        "predict", help="Write every image's class and probabilities."
    )
    for command in (embed, predict):
        command.add_argument(
            "model",
            help="SavedModel folder, .keras file or a published checkpoint "
            "name (keras_ssl.pretrained.CHECKPOINTS).",
        )
        command.add_argument(
            "images", help="Folder of image files, or a .npy / .npz file."
        )
        command.add_argument(
            "--batch-size", type=int, default=64, help="Default: 64."
        )
        command.add_argument(
            "--quiet", action="store_true", help="No progress line."
        )
    embed.add_argument(
        "--out", required=True, help="Output file: .csv, .npz or .parquet."
    )
    embed.add_argument(
        "--output",
        default="embedding",
        help="Served output to write, e.g. projection (default: embedding).",
    )
    predict.add_argument(
        "--out",
        help="Output file: .csv, .npz or .parquet (default: CSV "
        "on standard output).",
    )
    return parser, parser.parse_args(argv)


def main(argv=None):
    parser, args = parse_args(sys.argv[1:] if argv is None else argv)
    # Keras and TensorFlow: loaded once the arguments are read (`--help`).
    from keras_ssl import inference

    options = dict(batch_size=args.batch_size, progress=not args.quiet)
    try:
        if args.command == "embed":
            result = inference.embed_images(
                args.model, args.images, args.out, output=args.output, **options
            )
        else:
            result = inference.predict_images(
                args.model, args.images, args.out, **options
            )
    except ValueError as error:
        parser.error(str(error))
    if result.corrupt:
        sys.stderr.write(
            f"{len(result.corrupt)} corrupt file(s), skipped:\n"
            + "".join(f"  {name}\n" for name in result.corrupt)
        )
    sys.stderr.write(
        f"{result.rows} row(s) written to {result.out or 'standard output'}; "
        f"{len(result.corrupt)} corrupt file(s)\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
