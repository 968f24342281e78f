"""keras-ssl: semi-supervised visual representation learning for Keras 3.

SimCLRv2, PAWS and SemPPL as Keras models with custom training steps, LARS,
synchronized BatchNorm and recipes that run from one CPU to TPU pods.
"""

from keras_ssl import backbones
from keras_ssl import data
from keras_ssl import distribute
from keras_ssl import evaluation
from keras_ssl import layers
from keras_ssl import losses
from keras_ssl import models
from keras_ssl import ops
from keras_ssl import optimizers
from keras_ssl import recipes

__version__ = "0.1.0"
