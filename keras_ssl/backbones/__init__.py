"""Backbones: the SimCLRv2 ResNet family."""
