"""Evaluation: soft nearest-neighbour (PAWS-NN), weighted k-NN and
streamed top-k accuracy."""

from keras_ssl.evaluation.embed import embed
from keras_ssl.evaluation.knn import KNNClassifier
from keras_ssl.evaluation.knn_monitor import KNNMonitor
from keras_ssl.evaluation.soft_nearest_neighbour import SoftNearestNeighbour
from keras_ssl.evaluation.streamed import streamed_accuracy
from keras_ssl.evaluation.streamed import streamed_embeddings
from keras_ssl.evaluation.streamed import streamed_knn_accuracy
