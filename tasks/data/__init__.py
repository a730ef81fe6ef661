"""The text tasks read: corpora (CPython's own docs by default, a local folder, any `datasets` spec), split by
document hash, tokenized and cached by content."""
