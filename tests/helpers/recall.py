"""A fixture `LongContextLM` for recall tasks whose memory is known exactly."""

from bench.models.tokenizers import ByteTokenizer


class RecallLM:
    """A fixture model that recalls a key's value iff the key appeared within `reach` tokens before the query."""

    def __init__(self, reach: int) -> None:
        self.tokenizer, self.reach = ByteTokenizer(), reach

    def loglikelihood(self, context, continuation):
        key, before = context[-1], context[:-1]
        for back, t in enumerate(reversed(before), start=1):
            if t == key and back <= self.reach:
                return 0.0, before[len(before) - back + 1] == continuation[0]
        return -5.0, False

    def state_bytes_after(self, n_tokens):
        return 8 * min(n_tokens, self.reach)
