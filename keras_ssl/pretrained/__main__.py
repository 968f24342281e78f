"""`python -m keras_ssl.pretrained convert SRC DST`.

Converts a published checkpoint (a name from
`keras_ssl.pretrained.CHECKPOINTS` or a local SimCLR / PAWS / SemPPL
checkpoint) to a Keras file: `DST.keras` (the whole model, loadable with
`keras.saving.load_model`) or `DST.weights.h5` (weights only).
"""

import argparse
import json
import os
import sys

from keras_ssl.pretrained import catalog

FORMATS = ("simclr", "paws", "semppl")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m keras_ssl.pretrained",
        description=__doc__.split("\n")[0],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser(
        "convert", help="Convert a checkpoint to .keras or .weights.h5."
    )
    convert.add_argument(
        "src", help="A name from keras_ssl.pretrained.CHECKPOINTS or a path."
    )
    convert.add_argument(
        "dst", help="Output path ending in .keras or .weights.h5."
    )
    convert.add_argument(
        "--format",
        choices=FORMATS,
        help="Format of a local SRC; guessed from the path when omitted "
        "(directory or TF checkpoint: simclr, .pth/.pth.tar/.pt: paws, "
        ".pkl: semppl).",
    )
    convert.add_argument(
        "--ft-layer",
        type=int,
        default=0,
        help="SimCLR: projection-head layer the classifier reads (default 0).",
    )
    args = parser.parse_args(argv)
    if not args.dst.endswith((".keras", ".weights.h5")):
        parser.error(f"DST must end in .keras or .weights.h5, got {args.dst!r}")
    return args


def guess_format(path):
    """The reader for a local checkpoint path."""
    if path.endswith((".pth", ".pth.tar", ".pt")):
        return "paws"
    if path.endswith(".pkl"):
        return "semppl"
    if os.path.isdir(path) or os.path.exists(path + ".index"):
        return "simclr"
    raise ValueError(
        f"Cannot tell the format of {path!r}; pass --format "
        f"{'|'.join(FORMATS)}."
    )


def convert(src, dst, fmt=None, ft_layer=0):
    """Reads `src` and writes `dst`; returns the model."""
    if src in catalog.CHECKPOINTS:
        model = catalog.load(src)
    else:
        fmt = fmt or guess_format(src)
        method = "simclrv2" if fmt == "simclr" else fmt
        model = catalog.read(method, src, ft_layer=ft_layer)
    if dst.endswith(".keras"):
        model.save(dst)
    else:
        model.save_weights(dst)
    return model


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    model = convert(args.src, args.dst, args.format, args.ft_layer)
    # A .weights.h5 file needs the same network to load into.
    print(json.dumps({"dst": args.dst, "encoder": model.encoder.get_config()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
