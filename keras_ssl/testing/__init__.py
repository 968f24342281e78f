"""Test helpers with the contract checks every layer and model must pass."""

from keras_ssl.testing.subprocess import run_in_subprocess
from keras_ssl.testing.test_case import TestCase
