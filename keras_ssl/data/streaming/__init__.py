"""Streaming input: image folders and tfds splits read image by image.

`keras_ssl.data.streaming` holds the pipeline for data sets too large for
memory (ImageNet): an `ImageTable` lists the images by reference (files,
or byte ranges of tfds records), an `ImageStream` reads, decodes and
crops them batch by batch (JPEGs decoded inside the crop window only),
`SupportStream` draws PAWS's class-balanced support batches and
`StreamingDataset` zips them into the dict batches the pretrainers take.
Every batch is a function of its step, so streams resume exactly and
shard across input pipelines without coordination.

Example:

```python
from keras_ssl.data import streaming

train = streaming.list_folder("imagenet/train")
labeled = streaming.select_by_name(
    train, streaming.read_subset_file("1percent.txt"), "1percent.txt")
stream = streaming.StreamingDataset(
    streaming.ImageStream(train, batch_size=256, image_size=224),
    labeled=streaming.ImageStream(labeled, 64, 224, salt=1))
model.fit(stream.to_tf_dataset(), steps_per_epoch=stream.steps_per_epoch)
```
"""

from keras_ssl.data.streaming.image_stream import ImageStream
from keras_ssl.data.streaming.image_table import ImageTable
from keras_ssl.data.streaming.image_table import list_folder
from keras_ssl.data.streaming.image_table import list_tfds
from keras_ssl.data.streaming.image_table import read_labels
from keras_ssl.data.streaming.image_table import read_subset_file
from keras_ssl.data.streaming.image_table import select_balanced
from keras_ssl.data.streaming.image_table import select_by_name
from keras_ssl.data.streaming.image_table import subset_file
from keras_ssl.data.streaming.streaming_dataset import StreamingDataset
from keras_ssl.data.streaming.support_stream import SupportStream

__all__ = [
    "ImageStream",
    "ImageTable",
    "StreamingDataset",
    "SupportStream",
    "list_folder",
    "list_tfds",
    "read_labels",
    "read_subset_file",
    "select_balanced",
    "select_by_name",
    "subset_file",
]
