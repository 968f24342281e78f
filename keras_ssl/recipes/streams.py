"""Streamed data of the recipes: ImageNet from tfds or an image folder.

The in-memory data sets (`datasets.py`) hold every image; these streams
hold only references (`keras_ssl.data.streaming.ImageTable`), read and
decode each image when a batch needs it, resume exactly at any step and
give each input pipeline of a multi-worker strategy its share.

Interface for the runner (`stages.py`):

```python
data = RecipeStreams(config)  # lists the data, checks the subset; no pixels
data.num_classes       # classes of the data set
data.num_train         # training images (a pretraining epoch)
data.num_labeled       # images of the labeled subset
data.identity()        # a dict for the stages' fingerprints

# Training streams: `num_batches` is None; `to_tf_dataset(input_context,
# start_step)` gives per-replica batches from global step `start_step`
# without reading the skipped images (use it to resume, rather than
# `.skip()`, which decodes them); `distribute(strategy, start_step)`.
data.pretrain_stream(batch_size, labeled_batch_size=0,
                     support=(classes_per_batch, images_per_class),
                     image_ids=True, monitor_labels=False, seed_offset=0)
data.labeled_stream(batch_size, seed_offset=0)   # (images, labels)

# Evaluation on the streamed validation split (SimCLR's 0.875 centre crop):
data.evaluate_classifier(model)        # {"top1": ..., "top5": ...}
data.evaluate_knn(encoder, k=200, temperature=0.1, output=None)
```

The config needs `dataset` (`"imagenet2012"`: a prepared tfds
`imagenet2012`, and `imagenet2012_subset` for the 1% / 10% subsets;
`"folder"`: `data_dir/train/<class>/*` and `data_dir/val/<class>/*`),
`data_dir`, `image_size`, `seed`, and the labeled subset as `labels`
(`"1pct"`, `"10pct"` or the path of a file of training file names); a
config without `labels` gets `"1pct"` / `"10pct"` from a
`labeled_fraction` of 0.01 / 0.1, and otherwise (folders only) a
class-balanced subset from `labeled_per_class` / `labeled_fraction`.
"""

import dataclasses
import hashlib
import os

import numpy as np

from keras_ssl.data import streaming
from keras_ssl.data.streaming.image_table import SUBSET_FILES

DATASETS = ("imagenet2012", "folder")
_TFDS_NAME = "imagenet2012"
_FRACTIONS = {0.01: "1pct", 0.1: "10pct"}
_VAL_FOLDERS = ("val", "validation")


def _labels_of(config):
    """The config's labeled subset: `"1pct"`, `"10pct"`, a path, or
    `None` for a class-balanced subset."""
    labels = getattr(config, "labels", None)
    if labels is not None:
        return labels
    if getattr(config, "labeled_per_class", None) is None:
        return _FRACTIONS.get(getattr(config, "labeled_fraction", None))
    return None


class RecipeStreams:
    """The data of one recipe run, streamed.

    Args:
        config: a recipe config (see the module's docstring for the
            fields read).
    """

    def __init__(self, config):
        self.config = config
        if config.dataset not in DATASETS:
            raise ValueError(
                f"`dataset` must be one of {DATASETS} for streaming. "
                f"Received: dataset={config.dataset!r}"
            )
        if config.dataset == "folder" and not config.data_dir:
            raise ValueError(
                "`dataset='folder'` needs `data_dir` (with train/ and val/ "
                "class folders). Received: data_dir=None"
            )
        self.labels = _labels_of(config)
        if config.dataset == "folder":
            self.train = streaming.list_folder(
                os.path.join(config.data_dir, "train")
            )
            self.validation = streaming.list_folder(self._val_folder())
            self.labeled = self._folder_subset()
        else:
            self.train = streaming.list_tfds(
                _TFDS_NAME, "train", config.data_dir
            )
            self.validation = streaming.list_tfds(
                _TFDS_NAME, "validation", config.data_dir
            )
            self.labeled = self._tfds_subset()

    def _val_folder(self):
        for name in _VAL_FOLDERS:
            path = os.path.join(self.config.data_dir, name)
            if os.path.isdir(path):
                return path
        raise ValueError(
            f"`data_dir` must hold a val/ (or validation/) folder of class "
            f"folders. Received: data_dir={self.config.data_dir!r}"
        )

    def _folder_subset(self):
        config = self.config
        if self.labels is None:
            return streaming.select_balanced(
                self.train,
                per_class=getattr(config, "labeled_per_class", None),
                fraction=(
                    None
                    if getattr(config, "labeled_per_class", None)
                    else getattr(config, "labeled_fraction", None)
                ),
                seed=config.seed,
            )
        path = streaming.subset_file(self.labels, config.data_dir)
        names = streaming.read_subset_file(path)
        return streaming.select_by_name(self.train, names, f"`labels` {path}")

    def _tfds_subset(self):
        """The tfds subset: `imagenet2012_subset/<labels>` when prepared,
        else the training records a subset file names (which reads the
        training split's labels once)."""
        config = self.config
        local = os.path.join(
            config.data_dir or "", SUBSET_FILES.get(self.labels, "")
        )
        if self.labels in SUBSET_FILES and not os.path.isfile(local):
            name = f"{_TFDS_NAME}_subset/{self.labels}"
            try:
                subset = streaming.list_tfds(name, "train", config.data_dir)
            except FileNotFoundError as error:
                raise ValueError(
                    f"`labels={self.labels!r}` reads the prepared tfds "
                    f"{name!r} or SimCLR's {SUBSET_FILES[self.labels]} at "
                    f"{local}; neither is there ({error})"
                ) from None
            # Its images are not rows of the training table.
            subset = dataclasses.replace(
                subset, ids=np.full(len(subset), -1, np.int64)
            )
            return streaming.read_labels(subset)
        if self.labels is None:
            raise ValueError(
                "The tfds ImageNet streams take the papers' subsets: set "
                "`labels` to '1pct', '10pct' or a file of training file "
                "names. Received: labels=None"
            )
        path = streaming.subset_file(self.labels, config.data_dir or "")
        names = streaming.read_subset_file(path)
        self.train = streaming.read_labels(self.train)
        return streaming.select_by_name(self.train, names, f"`labels` {path}")

    # --- Sizes and identity. ---

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def num_train(self) -> int:
        return len(self.train)

    @property
    def num_labeled(self) -> int:
        return len(self.labeled)

    def sample_images(self, count):
        """None: the images are streamed, and none is read for a look at
        the views."""
        return None

    def identity(self, labels=True) -> dict:
        """The data's name, sizes and a hash of the labeled subset, for
        the stages' fingerprints; with `labels=False`, the names and sizes
        alone (for stages that read no labels)."""
        identity = {
            "dataset": self.config.dataset,
            "train": self.num_train,
            "test": len(self.validation),
        }
        if not labels:
            return identity
        digest = hashlib.sha256()
        for array in (self.labeled.names, self.labeled.labels):
            if array is not None:
                digest.update(np.ascontiguousarray(array).tobytes())
        return {
            **identity,
            "labeled": self.num_labeled,
            "hash": digest.hexdigest()[:16],
        }

    # --- Streams. ---

    def _stream(self, table, batch_size, salt, seed_offset=0, **kwargs):
        return streaming.ImageStream(
            table,
            batch_size,
            self.config.image_size,
            seed=self.config.seed + seed_offset,
            salt=salt,
            skip_corrupt=self.config.dataset == "folder",
            **kwargs,
        )

    def pretrain_stream(
        self,
        batch_size: int,
        labeled_batch_size: int = 0,
        support=None,
        image_ids: bool = False,
        monitor_labels: bool = False,
        seed_offset: int = 0,
    ):
        """The pretraining (or distillation) stream of dict batches.

        Args:
            batch_size: int. Unlabeled images per global batch (all the
                training images, labeled ones included, as the papers).
            labeled_batch_size: int. Labeled images per batch (0: none).
            support: optional `(classes_per_batch, images_per_class)` of
                PAWS's class-balanced support batches.
            image_ids: bool. Yield the images' ids (SimCLRv2's memory).
            monitor_labels: bool. Yield the unlabeled images' labels
                (SemPPL's pseudo-label monitoring).
            seed_offset: int. Added to the config's seed.

        Returns:
            A `keras_ssl.data.streaming.StreamingDataset`.
        """
        labeled = sampler = None
        if labeled_batch_size:
            labeled = self._stream(
                self.labeled, labeled_batch_size, 1, seed_offset
            )
        if support is not None:
            classes, images = support
            sampler = streaming.SupportStream(
                self.labeled,
                classes,
                images,
                self.config.image_size,
                seed=self.config.seed + seed_offset,
            )
        return streaming.StreamingDataset(
            self._stream(self.train, batch_size, 0, seed_offset),
            labeled=labeled,
            support=sampler,
            image_ids=image_ids,
            monitor_labels=monitor_labels,
        )

    def labeled_stream(self, batch_size: int, seed_offset: int = 0):
        """`(images, labels)` batches of the labeled subset (fine-tuning,
        supervised baselines), reshuffled every pass."""
        return LabeledStream(
            self._stream(self.labeled, batch_size, 3, seed_offset)
        )

    def validation_stream(self, batch_size: int = 256):
        """One pass over the validation images, SimCLR's 0.875 centre
        crop, as `(images, labels, ids)`."""
        return self._stream(
            self.validation,
            batch_size,
            4,
            crop="center",
            shuffle=False,
            repeat=False,
        )

    def evaluation_stream(self, table, batch_size=256):
        """One ordered pass over `table` (e.g. `self.labeled`), centre
        crop, as `(images, labels, ids)`."""
        return self._stream(
            table, batch_size, 5, crop="center", shuffle=False, repeat=False
        )

    # --- Evaluation. ---

    def evaluate_classifier(self, model, batch_size: int = 256, output=None):
        """Top-1 / top-5 accuracy of a classifier's logits on the streamed
        validation split."""
        # Keras: loaded when the stage reports.
        from keras_ssl.evaluation import streamed_accuracy

        stream = self.validation_stream(batch_size).to_tf_dataset()
        return streamed_accuracy(model, stream, output=output)

    def evaluate_knn(
        self,
        encoder,
        batch_size: int = 256,
        k: int = 200,
        temperature: float = 0.1,
        output=None,
        bank=None,
    ):
        """Weighted k-NN top-1 / top-5 on the validation split, with the
        features of `bank` (a table; the labeled subset by default)
        computed batch by batch."""
        # Keras: loaded when the stage reports.
        from keras_ssl.evaluation import streamed_knn_accuracy

        bank = self.labeled if bank is None else bank
        return streamed_knn_accuracy(
            encoder,
            self.evaluation_stream(bank, batch_size).to_tf_dataset(),
            self.validation_stream(batch_size).to_tf_dataset(),
            k=k,
            temperature=temperature,
            num_classes=self.num_classes,
            output=output,
        )

    def embeddings(self, model, output="embedding"):
        """`(labeled features, their labels, validation features, their
        labels)` of `model`'s `output`, computed batch by batch."""
        from keras_ssl.evaluation import streamed_embeddings  # Keras.

        def features(stream):
            dataset = stream.to_tf_dataset()
            return streamed_embeddings(model, dataset, output=output)

        labeled, labels = features(self.evaluation_stream(self.labeled))
        test, truth = features(self.validation_stream())
        return labeled, labels, test, truth

    def representation(self, model):
        """k-NN top-1 / top-5 of the encoder's features, computed batch by
        batch (no linear probe: it would need every labeled feature and a
        solver pass of its own)."""
        accuracy = self.evaluate_knn(model, output="embedding")
        return {
            "knn_accuracy": accuracy["top1"],
            "knn_top5_accuracy": accuracy["top5"],
        }

    def pixel_baselines(self):
        """None (an empty dict): they need the images in memory."""
        return {}


class LabeledStream:
    """`(images, labels)` batches of an `ImageStream`, for `fit()`."""

    num_batches = None

    def __init__(self, stream):
        self.stream = stream

    @property
    def steps_per_epoch(self) -> int:
        return len(self.stream)

    def to_tf_dataset(self, input_context=None, start_step: int = 0):
        """Per-replica `(images, labels)` from global step `start_step`."""
        batches = self.stream.to_tf_dataset(input_context, start_step)
        return batches.map(lambda images, labels, ids: (images, labels))

    def distribute(self, strategy, start_step: int = 0):
        return strategy.distribute_datasets_from_function(
            lambda context: self.to_tf_dataset(context, start_step)
        )
