"""SimCLRv2 on CIFAR-10 with 4,000 labels (400 per class).

Command (from the repository root; DATA_DIR holds CIFAR-10 as
`train.npz`/`test.npz` with keys `x`, `y`, or a prepared TensorFlow
Datasets copy: the recipes download nothing, and without `--data_dir`
they read tfds's default folder, where `tfds build cifar10` puts it):

    python recipes/simclrv2_cifar10.py --data_dir DATA_DIR

Hardware and time: on one modern GPU, the default (CIFAR-stem ResNet-18,
batch 512, 100 pretraining epochs, 30 fine-tuning and 30 distillation
epochs) takes roughly an hour; on a 2-core CPU a single epoch takes hours,
so use `--width_multiplier 0.25 --epochs 1` there (see docs/benchmarks.md
for what a 30-minute CPU run reaches).

Expected accuracy: SimCLR reports about 94% linear-evaluation accuracy on
CIFAR-10 with a ResNet-50 after 1000 epochs; with this recipe's 100 epochs
and a ResNet-18, expect lower. The numbers measured with this code are in
docs/benchmarks.md: only those have been run.
"""

import sys

from keras_ssl.recipes import simclrv2

if __name__ == "__main__":
    simclrv2.main(["--preset", "cifar10", *sys.argv[1:]])
