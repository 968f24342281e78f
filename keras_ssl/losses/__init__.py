"""Losses: NT-Xent, PAWS, SemPPL, SimCLRv2 distillation."""

from keras_ssl.losses.distillation import Distillation
from keras_ssl.losses.distillation import distillation
from keras_ssl.losses.nt_xent import NTXent
from keras_ssl.losses.nt_xent import nt_xent
from keras_ssl.losses.paws import PAWS
from keras_ssl.losses.paws import paws
from keras_ssl.losses.semppl import SemPPL
from keras_ssl.losses.semppl import semppl
