"""The leaf layer every other layer may import: errors and their one-line form, content hashing, atomic file writes
and the protocols (`Tokenizer`, `LongContextLM`) that tasks and models meet at. It imports nothing of the project."""
