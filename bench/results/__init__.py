"""The results store: the record schema and its append-only file, the cell manifest, and the frames and summary
tables derived from records."""
