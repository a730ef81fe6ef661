"""The harness: the factory (config -> tokenizer, data, task, model), the up-front check of a whole command line,
and the runner of one sweep cell."""
