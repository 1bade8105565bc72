"""Checkpoint readers: the protocol (base.py), the native tensor_bundle reader (bundle.py)
and TensorFlow's (tensorflow.py)."""
