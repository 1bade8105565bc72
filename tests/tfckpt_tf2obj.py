"""Small TensorFlow 2 object-based checkpoints, written by `tf.train.Checkpoint` from plain
`tf.Module`s (no Model Garden, no tf_keras), with the aliases that make bundle keys differ from
model paths: a root alias of a sub-module (as Model Garden's trainer adds), `layer_with_weights-N`
ordinals, a list of variables, `keras_api`, local names holding "." and "/", a legacy optimizer
(tf.compat.v1 Adam: SlotVariableReference slots) and a Python-state attribute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


@dataclass
class Written:
    prefix: Path
    values: dict[str, object]
    """Expected canonical path -> the value the object held when saved (bytes for strings)."""
    aliases: dict[str, set[str]]
    """Canonical path of each model variable -> every path to it from the root."""


def save_module_checkpoint(prefix: Path) -> Written:
    """A tf.Module "model" with two blocks, a head and a string variable, one compat.v1 Adam
    step over its float variables, and `tf.train.Checkpoint.save`. Returns what the reader
    should name each variable, worked out from the objects built here."""
    import tensorflow as tf

    rng = np.random.default_rng(7)

    def var(shape: tuple[int, ...], name: str) -> tf.Variable:
        return tf.Variable(rng.normal(size=shape).astype(np.float32), name=name)

    class Dense(tf.Module):
        def __init__(self, n_in: int, n_out: int) -> None:
            super().__init__()
            self.kernel = var((n_in, n_out), "kernel")
            self.bias = var((n_out,), "bias")

    class Block(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dense = Dense(4, 4)
            self.scale = var((), "scale")

    class Embedding(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embeddings = var((6, 4), "embeddings")

    class Encoder(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = Embedding()
            self.blocks = [Block(), Block()]
            # Keras functional models list their layers again by position.
            setattr(self, "layer_with_weights-0", self.embedding)
            for i, block in enumerate(self.blocks):
                setattr(self, f"layer_with_weights-{i + 1}", block)
            self.names = tf.Variable([b"alpha", b"", "ø".encode()], trainable=False)

    class Head(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dense = Dense(4, 2)
            self.bias = var((2,), "bias")
            self.output_bias = self.bias  # one variable, two local names

    class Model(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = Encoder()
            self.head = Head()

    class State(tf.train.experimental.PythonState):
        def __init__(self) -> None:
            self.value = b"some python state"

        def serialize(self) -> bytes:
            return self.value

        def deserialize(self, string: bytes) -> None:
            self.value = string

    model = Model()
    api = tf.Module()
    api.b = model.head.bias
    trainable = list(model.trainable_variables)
    opt = tf.compat.v1.train.AdamOptimizer(0.1)
    opt.apply_gradients([(tf.ones_like(v) * (i + 1), v) for i, v in enumerate(trainable)])
    root = tf.train.Checkpoint(
        model=model,
        encoder=model.encoder,  # a root alias, as Model Garden's trainer adds
        optimizer=opt,
        state=State(),
        variables=list(trainable),  # positional aliases of every weight
        keras_api=api,
        **{"head.dense": model.head.dense, "odd/name": model.head.bias},
    )
    path = Path(root.save(str(prefix)))

    enc, head = model.encoder, model.head
    named: dict[str, tf.Variable] = {
        "model/encoder/embedding/embeddings": enc.embedding.embeddings,
        "model/encoder/names": enc.names,
        "model/head/dense/kernel": head.dense.kernel,
        "model/head/dense/bias": head.dense.bias,
        "model/head/bias": head.bias,
    }
    for i, block in enumerate(enc.blocks):
        named[f"model/encoder/blocks/{i}/dense/kernel"] = block.dense.kernel
        named[f"model/encoder/blocks/{i}/dense/bias"] = block.dense.bias
        named[f"model/encoder/blocks/{i}/scale"] = block.scale
    values: dict[str, object] = {}
    for name, v in named.items():
        values[name] = [bytes(s) for s in v.numpy()] if v.dtype == tf.string else v.numpy()
    for name, v in list(named.items()):
        if any(v is t for t in trainable):
            for slot in ("m", "v"):
                values[f"{name}/.OPTIMIZER_SLOT/optimizer/{slot}"] = opt.get_slot(v, slot).numpy()
    beta1, beta2 = opt._get_beta_accumulators()
    values["optimizer/beta1_power"] = beta1.numpy()
    values["optimizer/beta2_power"] = beta2.numpy()
    values["save_counter"] = root.save_counter.numpy()
    values["state/.ATTRIBUTES/py_state"] = [b"some python state"]

    # Every path to each model variable, spelled out from the structure above.
    index = {id(v): i for i, v in enumerate(trainable)}

    def var_paths(name: str, v: tf.Variable) -> set[str]:
        out = {name}
        if name.startswith("model/encoder/"):
            rel = name.removeprefix("model/encoder/")
            inside = {rel}
            if rel.startswith("embedding/"):
                inside.add(rel.replace("embedding/", "layer_with_weights-0/", 1))
            for i in range(len(enc.blocks)):
                if rel.startswith(f"blocks/{i}/"):
                    inside.add(rel.replace(f"blocks/{i}/", f"layer_with_weights-{i + 1}/", 1))
            out = {f"{top}{p}" for top in ("model/encoder/", "encoder/") for p in inside}
        if name.startswith("model/head/dense/"):
            out.add(name.replace("model/head/dense/", "head.dense/"))
        if name == "model/head/bias":
            out |= {"model/head/output_bias", "odd/name", "keras_api/b"}
        if id(v) in index:
            out.add(f"variables/{index[id(v)]}")
        return out

    aliases = {name: var_paths(name, v) for name, v in named.items()}
    return Written(Path(str(path)), values, aliases)


def save_keras3_checkpoint(prefix: Path) -> tuple[Path, list[np.ndarray]]:
    """A Keras 3 model after one step of Keras 3's Adam, saved with tf.train.Checkpoint: the
    saver keys the model's weights under `optimizer/_trainable_variables/N`. Returns the
    prefix and the model's weights."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3), keras.layers.LayerNormalization()]
    )
    opt = keras.optimizers.Adam(0.01)
    x = np.ones((2, 4), np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(list(zip(grads, model.trainable_variables, strict=True)))
    path = tf.train.Checkpoint(model=model, optimizer=opt).save(str(prefix))
    return Path(path), [np.asarray(w) for w in model.weights]
