"""`SupportSampler`: PAWS's class-balanced support mini-batches."""

import numbers

import numpy as np

from keras_ssl._checks import check_positive_int
from keras_ssl.data._checks import as_int32_labels
from keras_ssl.data._checks import as_uint8_images
from keras_ssl.data._checks import check_num_classes
from keras_ssl.data._checks import check_seed
from keras_ssl.data._host_dataset import HostDataset


def balanced_rows(
    members, classes_per_batch, images_per_class, replacement, seed, step
):
    """Rows of class-balanced batch `step`: `classes_per_batch` distinct
    classes of `members` (class -> its rows), in ascending order, then
    `images_per_class` rows of each, from a generator seeded with
    `(seed, step)`. The streaming support batches use it too."""
    rng = np.random.default_rng([seed, int(step)])
    classes = np.sort(
        rng.choice(np.array(sorted(members)), classes_per_batch, replace=False)
    )
    return np.concatenate(
        [
            rng.choice(members[int(c)], images_per_class, replace=replacement)
            for c in classes
        ]
    )


class SupportSampler(HostDataset):
    """Class-balanced support batches, drawn independently every step.

    PAWS labels the unlabeled views by their similarity to a small
    labeled "support" batch that is resampled every iteration: first
    `classes_per_batch` distinct classes, then `images_per_class`
    distinct images of each (PAWS §5: 960 classes × 7 images on ImageNet;
    Appendix C: 10 × 64 on CIFAR-10). Appendix A: "we sample images *with
    replacement*. Therefore, while images in the same support mini-batch
    in a given iteration are always unique, some of the images may be
    re-sampled in the subsequent iteration's support mini-batch." Class
    balance is what the non-collapse argument needs (Assumption 1).

    Batch `step` is `sample(step)`, drawn by a generator seeded with
    `(seed, step)`: a pure function of the step, so it is reproducible
    and independent of the other batches. The classes of a batch appear
    in ascending order, `images_per_class` consecutive rows each.

    It is an infinite `keras.utils.PyDataset` (`sampler[step]` gives
    `(images, labels)`, or `(images, smoothed one-hot targets)` with
    `one_hot=True`; usable for supervised steps such as PAWS's CIFAR
    fine-tuning), has `to_tf_dataset()`, and `semi_supervised(...,
    support=sampler)` adds its batches to the training stream under
    `"support"` and `"support_labels"` (and `"support_targets"` with
    `one_hot=True`).

    Args:
        images: array `(N, H, W, 3)`, uint8 (or float in [0, 1]).
        labels: integer array `(N,)`.
        classes_per_batch: int. Classes in each batch.
        images_per_class: int. Images of each class in each batch.
        replacement: bool. Allow an image to appear twice in one batch, so
            classes with fewer than `images_per_class` images can be used.
            Defaults to `False` (the paper's unique-within-a-batch).
        label_smoothing: float in [0, 1). Smoothing ε of the one-hot
            targets, `(1 - ε) · onehot + ε / num_classes`. Defaults to
            `0.0` (PAWS uses 0.1).
        num_classes: optional int. Number of classes K of the one-hot
            targets; labels must lie in `[0, K)`. Defaults to
            `max(labels) + 1`.
        one_hot: bool. Whether batches carry smoothed one-hot targets
            (see above). Defaults to `False`.
        seed: int. Defaults to `0`.
        **kwargs: `workers`, `use_multiprocessing`, `max_queue_size` of
            `keras.utils.PyDataset`.

    Example:

    ```python
    sampler = keras_ssl.data.SupportSampler(
        x_labeled, y_labeled, classes_per_batch=10, images_per_class=64,
        label_smoothing=0.1)
    images, labels = sampler.sample(step=0)  # (640, 32, 32, 3), (640,)
    targets = sampler.one_hot_labels(labels)  # (640, 10) float32
    ```

    References:
        - Assran et al., Semi-Supervised Learning of Visual Features by
          Non-Parametrically Predicting View Assignments with Support
          Samples, ICCV 2021.
    """

    def __init__(
        self,
        images,
        labels,
        classes_per_batch: int,
        images_per_class: int,
        replacement: bool = False,
        label_smoothing: float = 0.0,
        num_classes: int | None = None,
        one_hot: bool = False,
        seed: int = 0,
        **kwargs,
    ):
        self.images = as_uint8_images(images, "images")
        if len(self.images) == 0:
            raise ValueError(
                "`images` holds no labeled images: the support set needs "
                "labeled data. Received: images.shape[0]=0"
            )
        self.num_classes = check_num_classes(num_classes)
        self.labels = as_int32_labels(
            labels, len(self.images), self.num_classes, "labels"
        )
        if self.num_classes is None:
            self.num_classes = int(self.labels.max()) + 1
        self.classes_per_batch = check_positive_int(
            "classes_per_batch", classes_per_batch
        )
        self.images_per_class = check_positive_int(
            "images_per_class", images_per_class
        )
        self.replacement = bool(replacement)
        if (
            isinstance(label_smoothing, bool)
            or not isinstance(label_smoothing, numbers.Real)
            or not 0.0 <= label_smoothing < 1.0
        ):
            raise ValueError(
                "`label_smoothing` must be in [0, 1). Received: "
                f"label_smoothing={label_smoothing!r}"
            )
        self.label_smoothing = float(label_smoothing)
        self.one_hot = bool(one_hot)
        self.seed = check_seed(seed)
        self.classes = np.unique(self.labels)
        self.members = {
            int(c): np.flatnonzero(self.labels == c) for c in self.classes
        }
        self._check_counts()
        super().__init__(steps_per_epoch=None, repeat=True, **kwargs)

    def _check_counts(self):
        if self.classes_per_batch > len(self.classes):
            raise ValueError(
                f"`classes_per_batch` must not exceed the number of labeled "
                f"classes ({len(self.classes)}). Received: "
                f"classes_per_batch={self.classes_per_batch}"
            )
        if self.replacement:
            return
        short = {
            c: len(m)
            for c, m in self.members.items()
            if len(m) < self.images_per_class
        }
        if short:
            listed = ", ".join(
                f"class {c} has {n}" for c, n in list(short.items())[:5]
            )
            raise ValueError(
                f"`images_per_class` must not exceed the number of labeled "
                f"images of any class ({listed}); pass replacement=True to "
                f"allow repeats within a batch. Received: "
                f"images_per_class={self.images_per_class}"
            )

    @property
    def batch_size(self) -> int:
        """Rows per batch: `classes_per_batch * images_per_class`."""
        return self.classes_per_batch * self.images_per_class

    def indices(self, step: int) -> np.ndarray:
        """Row indices into `images` / `labels` of batch `step`."""
        return balanced_rows(
            self.members,
            self.classes_per_batch,
            self.images_per_class,
            self.replacement,
            self.seed,
            step,
        )

    def sample(self, step: int):
        """Batch `step`: uint8 images `(C·I, H, W, 3)`, int32 labels."""
        rows = self.indices(step)
        return self.images[rows], self.labels[rows]

    def one_hot_labels(self, labels) -> np.ndarray:
        """Smoothed one-hot targets `(1 - ε) · onehot + ε / K`, float32."""
        labels = np.asarray(labels)
        targets = np.full(
            (len(labels), self.num_classes),
            self.label_smoothing / self.num_classes,
            np.float32,
        )
        targets[np.arange(len(labels)), labels] += 1.0 - self.label_smoothing
        return targets

    def features(self, step: int) -> dict:
        """Batch `step` under the keys `semi_supervised()` yields.

        Returns:
            `{"support": images, "support_labels": labels}`, plus
            `"support_targets"` (smoothed one-hot) when `one_hot=True`.
        """
        images, labels = self.sample(step)
        features = {"support": images, "support_labels": labels}
        if self.one_hot:
            features["support_targets"] = self.one_hot_labels(labels)
        return features

    def batch_at(self, epoch, index):
        images, labels = self.sample(index)
        if self.one_hot:
            return images, self.one_hot_labels(labels)
        return images, labels

    def batch_sizes(self):
        return {"classes_per_batch * images_per_class": self.batch_size}
