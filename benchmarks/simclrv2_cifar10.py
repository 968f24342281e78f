"""A short real-data SimCLRv2 run on CIFAR-10 with 4,000 labels, on CPU.

k-NN (k = 200, cosine, temperature 0.1) test accuracy of a randomly
initialised encoder and of the pretrained one, then fine-tuning on 4,000
labels (400 per class) against the same network trained from scratch on
the same labels for the same number of steps.

    PYTHONPATH=. python benchmarks/simclrv2_cifar10.py \
        --data_dir ../shared/datasets/cifar10 --epochs 6 --steps 50

Prints a markdown summary with the command, the machine and the times.
"""

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_ssl.backbones import ResNet  # noqa: E402
from keras_ssl.evaluation import KNNClassifier  # noqa: E402
from keras_ssl.evaluation import embed  # noqa: E402
from keras_ssl.recipes import datasets  # noqa: E402
from keras_ssl.recipes import simclrv2  # noqa: E402


def knn_accuracy(encoder, splits, train_limit):
    x = splits.x_train[:train_limit].astype("float32") / 255.0
    train = embed(encoder, x, batch_size=500)
    test = embed(encoder, splits.x_test.astype("float32") / 255.0, 500)
    knn = KNNClassifier(k=200, temperature=0.1, num_classes=10)
    knn.fit(train, splits.y_train[:train_limit])
    return knn.evaluate(test, splits.y_test)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data_dir", default="../shared/datasets/cifar10")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--learning_rate", type=float, default=8.0)
    parser.add_argument("--finetune_epochs", type=int, default=15)
    parser.add_argument("--finetune_learning_rate", type=float, default=0.5)
    parser.add_argument("--knn_train", type=int, default=50000)
    parser.add_argument("--output_dir", default="runs/bench_cifar10")
    parser.add_argument("--memory_size", type=int, default=4096)
    args = parser.parse_args()
    started = time.time()
    splits = datasets.load("cifar10", 32, args.data_dir)
    # The arrays are sorted by class: shuffle once so prefixes are mixed.
    order = np.random.default_rng(0).permutation(len(splits.x_train))
    splits.x_train, splits.y_train = (
        splits.x_train[order],
        splits.y_train[order],
    )
    keras.utils.set_random_seed(0)
    random_encoder = ResNet(
        depth=18,
        width_multiplier=args.width,
        stem="cifar",
        input_shape=(32, 32, 3),
    )
    knn_before = knn_accuracy(random_encoder, splits, args.knn_train)
    config = simclrv2.SimCLRv2Config.cifar10(
        data_dir=args.data_dir,
        width_multiplier=args.width,
        batch_size=args.batch,
        labeled_batch_size=0,
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        learning_rate=args.learning_rate,
        finetune_epochs=args.finetune_epochs,
        finetune_learning_rate=args.finetune_learning_rate,
        baseline_learning_rate=args.finetune_learning_rate,
        stages=("pretrain", "finetune"),
        memory_size=args.memory_size,
        export=False,
        output_dir=args.output_dir,
        verbose=2,
    )
    result = simclrv2.fit(config)
    encoder = result.models["pretrainer"].encoder
    knn_after = knn_accuracy(encoder, splits, args.knn_train)
    cpu = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    pretrain = result.stages["pretrain"].history
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {os.cpu_count()} cores, {cpu}, {platform.platform()}")
    print(f"total time: {(time.time() - started) / 60:.1f} min")
    print(
        f"pretraining steps: {args.epochs * args.steps} of batch {args.batch}"
    )
    accuracy = pretrain["contrastive_accuracy"][-1]
    print(f"final contrastive accuracy: {accuracy:.3f}")
    print(f"k-NN test accuracy, random init: {knn_before:.4f}")
    print(f"k-NN test accuracy, pretrained: {knn_after:.4f}")
    print(result.summary(table=False))


if __name__ == "__main__":
    main()
