"""Stateless math shared by the methods, written on `keras.ops` only."""

from keras_ssl.ops.math import cosine_similarity_matrix
from keras_ssl.ops.math import entropy
from keras_ssl.ops.math import knn_vote
from keras_ssl.ops.math import l2_normalize
from keras_ssl.ops.math import loss_dtype
from keras_ssl.ops.math import neighbour_votes
from keras_ssl.ops.math import sharpen
from keras_ssl.ops.math import soft_cross_entropy
from keras_ssl.ops.math import soft_nearest_neighbour
from keras_ssl.ops.math import soft_nearest_neighbour_sums
