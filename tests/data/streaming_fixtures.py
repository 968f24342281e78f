"""Tiny ImageNet look-alikes for the streaming tests (no download).

`write_folder` writes a `train/<synset>/*` and `val/<synset>/*` tree of
JPEGs of varied sizes (a PNG and, optionally, a corrupt file among them);
`prepare_tfds` prepares a few-image `imagenet2012` (and its
`imagenet2012_subset/1pct`) under a tfds data directory, in the layout
and record format tfds gives the real ones.
"""

import os

import numpy as np

from keras_ssl.data import streaming

SYNSETS = ("n01440764", "n01443537", "n01484850", "n01491361")


def _image(rng, index):
    height, width = rng.integers(24, 72, 2)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    # A distinct mean colour per image keeps images tellable apart.
    image[..., 0] = index % 256
    return image


def write_folder(root, per_class=(12, 4), corrupt=True, seed=0):
    """Writes `root/{train,val}/<synset>/<synset>_<i>.JPEG`.

    Returns:
        The training file names, in the folder table's order.
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    names = []
    for split, count in zip(("train", "val"), per_class):
        for c, synset in enumerate(SYNSETS):
            folder = os.path.join(root, split, synset)
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                image = _image(rng, 10 * c + i)
                png = split == "train" and c == 1 and i == 0
                name = f"{synset}_{i}.{'png' if png else 'JPEG'}"
                encode = tf.io.encode_png if png else tf.io.encode_jpeg
                tf.io.write_file(os.path.join(folder, name), encode(image))
                if split == "train":
                    names.append(name)
    if corrupt:
        path = os.path.join(root, "train", SYNSETS[2], f"{SYNSETS[2]}_x.JPEG")
        with open(path, "wb") as f:
            f.write(b"\xff\xd8\xff not really a JPEG")
    return sorted(names, key=lambda n: (n.split("_")[0], n))


def _builder(dataset_name, version, configs=()):
    import tensorflow_datasets as tfds

    class Fake(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = dataset_name
        VERSION = version
        BUILDER_CONFIGS = [
            tfds.core.BuilderConfig(name=c, version=version) for c in configs
        ]

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(encoding_format="jpeg"),
                        "label": tfds.features.ClassLabel(num_classes=1000),
                        "file_name": tfds.features.Text(),
                    }
                ),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            splits = {"train": self._generate_examples(0, self.train)}
            if self.validation:
                splits["validation"] = self._generate_examples(1, 3)
            return splits

        def _generate_examples(self, salt, per_class):
            rng = np.random.default_rng(salt)
            for c, synset in enumerate(SYNSETS):
                for i in range(per_class):
                    name = f"{synset}_{i}.JPEG"
                    yield (
                        name,
                        {
                            "image": _image(rng, 10 * c + i),
                            "label": c,
                            "file_name": name,
                        },
                    )

    return Fake


def prepare_tfds(data_dir, train_per_class=8, subset_per_class=2):
    """Prepares `imagenet2012` (train, validation) and
    `imagenet2012_subset/1pct` (train) under `data_dir`."""
    import tensorflow_datasets as tfds

    def version(name):
        # The version the registered builder looks for under `data_dir`.
        return tfds.builder(name, data_dir=data_dir).version

    full = _builder("imagenet2012", version("imagenet2012"))(data_dir=data_dir)
    full.train, full.validation = train_per_class, True
    full.download_and_prepare()
    subset = _builder(
        "imagenet2012_subset",
        version("imagenet2012_subset/1pct"),
        ("1pct", "10pct"),
    )(data_dir=data_dir, config="1pct")
    subset.train, subset.validation = subset_per_class, False
    subset.download_and_prepare()
    return data_dir


def folder_tables(root):
    """The decodable training images of a `write_folder` tree as a table,
    and a class-balanced subset of 4 per class."""
    table = streaming.list_folder(os.path.join(root, "train"))
    good = [i for i, n in enumerate(table.names) if not n.endswith(b"_x.JPEG")]
    table = table.take(good)
    return table, streaming.select_balanced(table, per_class=4, seed=0)
