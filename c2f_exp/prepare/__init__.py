"""The `prepare` stage: builds the tiny world's data, tokenizer, base and instruct models; for
hub models, checks that they can be reached (docs/prepare.md)."""
