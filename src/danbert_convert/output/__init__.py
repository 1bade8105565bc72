"""The output folder: weights and config.json (writer.py), the tokenizer files
(tokenizer.py), danbert-manifest.json (manifest.py) and the model card README.md (card.py)."""
