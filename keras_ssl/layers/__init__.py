"""Layers: augmentations, projection/prediction heads, memory queues."""

from keras_ssl.layers.projection_head import ProjectionHead
