"""Convert Google-BERT TensorFlow 1 checkpoints (BotXo's Danish BERT first) to transformers."""

__version__ = "0.1.0"
