"""NeuralMerger: align layers of several models, cut kernels into segments, build shared codebooks and index maps."""
