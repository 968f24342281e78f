"""Inference on folders of image files or arrays: embeddings and
predictions of an export, a `.keras` file or a published checkpoint,
written to `.csv`, `.npz` or `.parquet` (also `python -m keras_ssl embed`
and `python -m keras_ssl predict`)."""

from keras_ssl.inference.folder_inference import InferenceResult
from keras_ssl.inference.folder_inference import embed_images
from keras_ssl.inference.folder_inference import predict_images
from keras_ssl.inference.image_source import ImageSource
from keras_ssl.inference.served_model import ServedModel
from keras_ssl.inference.table_writer import TableWriter
