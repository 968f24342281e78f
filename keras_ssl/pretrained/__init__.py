"""Published SimCLR, PAWS and SemPPL networks as keras_ssl models."""

from keras_ssl.pretrained.pretrained_model import PretrainedModel
from keras_ssl.pretrained.simclr import load_simclr
