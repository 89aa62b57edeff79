"""Calibration: the merged model as a TensorFlow graph with trainable codebooks, trained end to end."""
