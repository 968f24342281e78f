"""Layers: augmentations, projection/prediction heads, memory queues."""
