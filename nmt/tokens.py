"""Special token ids, fixed across every tokenizer and model this toolkit makes.

A leaf module: the model, batching and search need these numbers, not SentencePiece.
"""

PAD, UNK, BOS, EOS = 0, 1, 2, 3
