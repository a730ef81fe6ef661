"""Performance: how time and memory grow with context per mechanism (`make perf`), its reference points (dense-mask
layers, the `infini-transformer-pytorch` peer) and its report."""
