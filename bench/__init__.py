"""memorybench harness: config, backbone, training, evaluation, records, reports."""
