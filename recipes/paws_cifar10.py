"""PAWS on CIFAR-10 with 4,000 labels (PAWS Appendix C).

Command (DATA_DIR holds CIFAR-10 as `train.npz`/`test.npz` with keys
`x`, `y`, or a prepared TensorFlow Datasets copy: the recipes download
nothing, and without `--data_dir` they read tfds's default folder,
where `tfds build cifar10` puts it):

    python recipes/paws_cifar10.py --data_dir DATA_DIR

Hardware and time: the paper trains a WRN-28-2 for 600 epochs at batch 256
on GPUs; this preset uses a CIFAR-stem ResNet-18 and takes several GPU
hours at that length (pass `--epochs` to shorten it). On a 2-core CPU use
`--width_multiplier 0.25 --epochs 1 --steps_per_epoch 50`.

Expected accuracy: the paper reports 96.0% top-1 with 4,000 labels after
600 epochs with a WRN-28-2. Nothing that long has been run with this code;
what has been measured is in docs/benchmarks.md.
"""

import sys

from keras_ssl.recipes import paws

if __name__ == "__main__":
    paws.main(["--preset", "cifar10", *sys.argv[1:]])
