"""Models: one `keras.Model` subclass per method and stage."""

from keras_ssl.models.distiller import Distiller
from keras_ssl.models.fine_tuner import FineTuner
from keras_ssl.models.fine_tuner import fine_tuning_network
from keras_ssl.models.paws_pretrainer import PAWSPretrainer
from keras_ssl.models.semppl_pretrainer import SemPPLPretrainer
from keras_ssl.models.simclrv2_pretrainer import SimCLRv2Pretrainer
from keras_ssl.models.ssl_model import SSLModel
