"""Models: the backbone decoder with one mechanism per layer, its streaming `LongContextLM`, tokenizers, and
pretrained Hugging Face models behind the same interfaces."""
