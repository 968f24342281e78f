"""Layers: augmentations, projection/prediction heads, memory queues."""

from keras_ssl.layers.color_distortion import ColorDistortion
from keras_ssl.layers.fused_batch_normalization import FusedBatchNormalization
from keras_ssl.layers.memory_queue import MemoryQueue
from keras_ssl.layers.projection_head import ProjectionHead
from keras_ssl.layers.random_gaussian_blur import RandomGaussianBlur
from keras_ssl.layers.random_resized_crop import RandomResizedCrop
from keras_ssl.layers.random_solarize import RandomSolarize
from keras_ssl.layers.views import MultiCrop
from keras_ssl.layers.views import Views
from keras_ssl.layers.views import ViewSpec
