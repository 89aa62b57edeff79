"""Executors of a merged graph outside the C runtime: numpy (the reference semantics in Python) and a Keras model with decoded weights."""
