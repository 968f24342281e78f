"""Recipes: `fit()` for each method, with configs and a command line."""

from keras_ssl.recipes import simclrv2
