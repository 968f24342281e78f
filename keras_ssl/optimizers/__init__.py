"""Optimizers: LARS, warm-up + cosine schedule, learning-rate scaling."""

from keras_ssl.optimizers.lars import LARS
from keras_ssl.optimizers.scaling import scale_learning_rate
from keras_ssl.optimizers.warmup_cosine_decay import WarmupCosineDecay
