"""Evaluation: soft nearest-neighbour (PAWS-NN) and weighted k-NN."""

from keras_ssl.evaluation.embed import embed
from keras_ssl.evaluation.knn import KNNClassifier
from keras_ssl.evaluation.soft_nearest_neighbour import SoftNearestNeighbour
