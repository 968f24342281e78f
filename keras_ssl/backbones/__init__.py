"""Backbones: the SimCLRv2 ResNet family."""

from keras_ssl.backbones.resnet import ResNet
