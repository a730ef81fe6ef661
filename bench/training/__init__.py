"""Training: the optimisation loop, the training-data mixture, the checkpoint cache and the two protocols
(`train.init=base|scratch`) plus LoRA on Hugging Face models."""
