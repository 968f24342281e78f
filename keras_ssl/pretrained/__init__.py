"""Published SimCLR, PAWS and SemPPL networks as keras_ssl models."""

from keras_ssl.pretrained.catalog import CHECKPOINTS
from keras_ssl.pretrained.catalog import Checkpoint
from keras_ssl.pretrained.catalog import load
from keras_ssl.pretrained.paws import load_paws
from keras_ssl.pretrained.pretrained_model import PretrainedModel
from keras_ssl.pretrained.safe_unpickler import SafeUnpickler
from keras_ssl.pretrained.safe_unpickler import load_pickle
from keras_ssl.pretrained.safe_unpickler import load_torch
from keras_ssl.pretrained.semppl import load_semppl
from keras_ssl.pretrained.simclr import load_simclr
from keras_ssl.pretrained.simclr import save_simclr
