"""The embedded tiny world: world generation, data, tokenizer, gold scorer, tiny models."""
