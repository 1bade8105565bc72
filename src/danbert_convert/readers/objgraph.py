"""TensorFlow 2 object-based checkpoints: variables named by object paths, not by bundle keys.

A TF2 checkpoint (`tf.train.Checkpoint`, Keras, Model Garden's trainer) is an ordinary bundle
plus `_CHECKPOINTABLE_OBJECT_GRAPH`, a string scalar holding a serialized
`tensorflow.TrackableObjectGraph`: node 0 is the saved root, each node lists its children by
local name, and a variable's node has a `VARIABLE_VALUE` attribute naming its bundle key.

The saver keys each variable by the first path its breadth-first walk meets, so a key depends
on which aliases the saving program attached: Model Garden's trainer keys the shared word table
`masked_lm/embedding_table`, Keras 3 keys model weights `optimizer/_trainable_variables/N`.
`ObjectGraphReader` therefore names each variable by a canonical path chosen among all of its
paths (`path_rank` gives the order), so that names follow the model, not the saver.
"""

from __future__ import annotations

import heapq
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from danbert_convert._proto import as_bytes, as_int, int64, proto_fields
from danbert_convert.errors import InputError
from danbert_convert.readers.base import CheckpointReader, VariableInfo

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
VARIABLE_VALUE = "VARIABLE_VALUE"
SLOT_MARK = ".OPTIMIZER_SLOT"
ATTRIBUTE_MARK = ".ATTRIBUTES"
MAX_PATHS = 64
"""Paths kept per node: aliases are few, but a graph may join them into many combinations."""
MAX_DEPTH = 64
MAX_SLOT_NESTING = 8
MAX_STEPS = 1 << 20
"""Paths looked at in all, so that a hostile graph cannot make the walk run for hours."""
MAX_COMPONENTS = 1 << 23
"""Components of those paths in all, the walk's memory (a BERT-large trainer's: ~70,000)."""
MAX_NAME_CHARS = 1 << 25
"""Characters of all the names built (a BERT-large trainer's: ~350,000). Local names are not
capped (TensorFlow caps none); a node's 64 paths, 64 deep in 10 kB names, are 250 MB."""

# Components that name a position in a list, not a role: they shift when a layer is added.
_POSITIONAL = re.compile(r"layer(_with_weights)?-\d+")
_LISTS = frozenset(
    ("variables", "trainable_variables", "non_trainable_variables",
     "_variables", "_trainable_variables", "_non_trainable_variables")
)  # fmt: skip


@dataclass(frozen=True)
class Attribute:
    """A SerializedTensor: one value a node saves, stored under `checkpoint_key`."""

    name: str
    full_name: str
    checkpoint_key: str


@dataclass(frozen=True)
class SlotVariable:
    """A SlotVariableReference of a (legacy) optimizer node: `slot` holds `slot_name` of
    `original`."""

    original: int
    slot_name: str
    slot: int


@dataclass
class TrackableNode:
    children: list[tuple[int, str]] = field(default_factory=list)  # (node id, local name)
    attributes: list[Attribute] = field(default_factory=list)
    slot_variables: list[SlotVariable] = field(default_factory=list)


def _text(value: int | bytes, what: str) -> str:
    try:
        return as_bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8") from None


def parse_object_graph(buf: bytes) -> list[TrackableNode]:
    """Parse a TrackableObjectGraph; raises ValueError for anything malformed.

    TrackableObjectGraph {1: repeated TrackableObject}; TrackableObject {1: ObjectReference
    children {1: node_id, 2: local_name}, 2: SerializedTensor attributes {1: name, 2: full_name,
    3: checkpoint_key}, 3: SlotVariableReference slot_variables {1: original_variable_node_id,
    2: slot_name, 3: slot_variable_node_id}} (other fields are not needed and skipped).
    """
    nodes: list[TrackableNode] = []
    for f, _, value in proto_fields(buf):
        if f != 1:
            continue
        node = TrackableNode()
        for g, _, item in proto_fields(as_bytes(value)):
            if g == 1:
                nid, name = 0, ""
                for h, _, x in proto_fields(as_bytes(item)):
                    if h == 1:
                        nid = int64(as_int(x))
                    elif h == 2:
                        name = _text(x, "a local name")
                node.children.append((nid, name))
            elif g == 2:
                texts = {1: "", 2: "", 3: ""}
                for h, _, x in proto_fields(as_bytes(item)):
                    if h in texts:
                        texts[h] = _text(x, "an attribute")
                node.attributes.append(Attribute(texts[1], texts[2], texts[3]))
            elif g == 3:
                original = slot = 0
                slot_name = ""
                for h, _, x in proto_fields(as_bytes(item)):
                    if h == 1:
                        original = int64(as_int(x))
                    elif h == 2:
                        slot_name = _text(x, "a slot name")
                    elif h == 3:
                        slot = int64(as_int(x))
                node.slot_variables.append(SlotVariable(original, slot_name, slot))
        nodes.append(node)
    if not nodes:
        raise ValueError("no nodes")
    for i, node in enumerate(nodes):
        ids = [c for c, _ in node.children]
        ids += [x for s in node.slot_variables for x in (s.original, s.slot)]
        for nid in ids:
            if not 0 <= nid < len(nodes):
                raise ValueError(f"node {i} refers to node {nid}, of {len(nodes)}")
    return nodes


def _positional(count: int, api: bool, previous: str | None, c: str) -> tuple[int, bool]:
    """(positional components, under keras_api) of a path after `previous` grown by `c`."""
    api = api or c == "keras_api"
    return count + (api or previous in _LISTS or bool(_POSITIONAL.fullmatch(c))), api


def _name_order(c: str) -> str:
    # Paths of as many components sort by their components with "/" appended as they sort
    # joined with "/" (exactly, when no local name holds a "/"), without joining them.
    return c + "/"


def path_rank(path: tuple[str, ...]) -> tuple[Any, ...]:
    """Sort key of a path from the root (tuple of local names); the least is the canonical one.

    In order: not through the root's `optimizer` (Keras 3 keys model weights there); fewest
    positional components (`layer-N`, `layer_with_weights-N`, an index into a variable list,
    anything under `keras_api`); through the root's `model` (Model Garden's trainer saves the
    whole network as `model` and adds aliases like `encoder` and `masked_lm` for partial
    restores); fewest components; then by name.
    """
    count, api, previous = 0, False, None
    for c in path:
        count, api = _positional(count, api, previous, c)
        previous = c
    first = path[0] if path else ""
    order = tuple(map(_name_order, path))
    return (first == "optimizer", count, first != "model", len(path), order)


def enumerate_paths(
    nodes: list[TrackableNode], max_paths: int = MAX_PATHS, max_depth: int = MAX_DEPTH
) -> list[list[tuple[str, ...]]]:
    """Simple paths from the root to each node, best first by `path_rank`: at most `max_paths`
    per node and `max_depth` components each. Raises ValueError past MAX_STEPS paths or
    MAX_COMPONENTS components followed.

    Best-first: a path's rank never falls as it grows, so each node's first paths found are
    its best ones (exactly, unless some node has more than `max_paths` better ones).
    """
    # A path is walked as a string of one character per component, the ordinal of its local
    # name in `path_rank`'s name order: it compares as fast as a joined name, whatever the
    # names' length, and holds none of their text.
    names = sorted({name for node in nodes for _, name in node.children}, key=_name_order)
    if len(names) > sys.maxunicode + 1:
        raise ValueError(f"more than {sys.maxunicode + 1} distinct local names")
    code = {name: chr(i) for i, name in enumerate(names)}
    kinds = {
        code[c]: (c == "keras_api", c in _LISTS, bool(_POSITIONAL.fullmatch(c))) for c in names
    }
    model, optimizer = code.get("model"), code.get("optimizer")
    found: list[list[tuple[str, ...]]] = [[] for _ in nodes]
    # ((through optimizer, positional, not through model, length, path), tie-break, node,
    # nodes on the path, keras_api seen)
    Item = tuple[tuple[bool, int, bool, int, str], int, int, tuple[int, ...], bool]
    heap: list[Item] = [((False, 0, True, 0, ""), 0, 0, (0,), False)]
    steps = components = 0
    while heap:
        rank, _, nid, on_path, api = heapq.heappop(heap)
        if len(found[nid]) >= max_paths:
            continue
        path = rank[-1]
        found[nid].append(tuple(names[ord(c)] for c in path))
        if len(path) >= max_depth:
            continue
        in_list = bool(path) and kinds[path[-1]][1]
        first = path[:1]
        for child, name in nodes[nid].children:
            if child in on_path or len(found[child]) >= max_paths:
                continue
            c = code[name]
            steps += 1
            components += len(path) + 1
            if steps > MAX_STEPS:
                raise ValueError(f"more than {MAX_STEPS} paths to follow")
            if components > MAX_COMPONENTS:
                raise ValueError(f"paths of more than {MAX_COMPONENTS} components to follow")
            keras_api, _, positional = kinds[c]
            child_api = api or keras_api
            count = rank[1] + (child_api or in_list or positional)
            top = first or c
            grown = (top == optimizer, count, top != model, len(path) + 1, path + c)
            heapq.heappush(heap, (grown, steps, child, (*on_path, child), child_api))
    return found


class _Budget:
    """Joins names, refusing past MAX_NAME_CHARS characters in all."""

    def __init__(self) -> None:
        self.left = MAX_NAME_CHARS

    def charge(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise ValueError(f"object paths of more than {MAX_NAME_CHARS} characters in all")

    def join(self, *parts: str) -> str:
        self.charge(sum(map(len, parts)) + len(parts))
        return "/".join(parts)


def _attribute_name(base: str, attribute: str) -> str:
    return f"{base}/{ATTRIBUTE_MARK}/{attribute}" if base else f"{ATTRIBUTE_MARK}/{attribute}"


def object_names(
    nodes: list[TrackableNode], paths: list[list[tuple[str, ...]]]
) -> dict[str, tuple[int, tuple[str, ...]]]:
    """checkpoint key -> (node id, its names, the canonical one first), for every attribute.

    A variable is named by its paths; a legacy optimizer's slot (which has no path of its own)
    by its variable's name, `.OPTIMIZER_SLOT`, the optimizer's path and the slot name, as
    TensorFlow keys it; any other attribute by its node's names, `.ATTRIBUTES`, and its name.
    Raises ValueError when two attributes name one key, or slots nest too deep.
    """
    refs = [(oid, ref) for oid, node in enumerate(nodes) for ref in node.slot_variables]
    budget = _Budget()
    joined: dict[int, list[str]] = {}

    def own(nid: int, count: int = MAX_PATHS) -> list[str]:
        """The names of the node's first `count` paths ("" is the root's); joined only when
        asked for, as most nodes need none and optimizers only their first."""
        done = joined.setdefault(nid, [])
        done += [budget.join(*p) for p in paths[nid][len(done) : count]]
        return done[:count]

    slot_names: dict[int, list[str]] = {}
    # A slot's name needs its variable's, which may be a slot's (of a slot...): each round
    # settles one more level.
    for _ in range(MAX_SLOT_NESTING + 1):
        found: dict[int, list[str]] = {}
        for oid, ref in refs:
            original = [n for n in slot_names.get(ref.original, [])[:1] + own(ref.original, 2) if n]
            if original:
                opt = own(oid, 1)
                tail = (*opt, ref.slot_name) if opt and opt[0] else (ref.slot_name,)
                found.setdefault(ref.slot, []).append(budget.join(original[0], SLOT_MARK, *tail))
        if found == slot_names:
            break
        slot_names = found
    else:
        raise ValueError(f"slot variables nested over {MAX_SLOT_NESTING} deep, or in a cycle")

    def names_of(nid: int) -> list[str]:
        """The node's names, best first."""
        return slot_names.get(nid, []) + own(nid)

    named: dict[str, tuple[int, tuple[str, ...]]] = {}
    for nid, node in enumerate(nodes):
        for attr in node.attributes:
            if attr.checkpoint_key in named:
                raise ValueError(
                    f"key {attr.checkpoint_key} is named by nodes "
                    f"{named[attr.checkpoint_key][0]} and {nid}"
                )
            if attr.name == VARIABLE_VALUE:
                bases = [n for n in names_of(nid) if n]
            else:
                names = names_of(nid)
                budget.charge(sum(len(n) + len(attr.name) + len(ATTRIBUTE_MARK) + 2 for n in names))
                bases = [_attribute_name(n, attr.name) for n in names]
            named[attr.checkpoint_key] = (nid, tuple(dict.fromkeys(bases)))
    return named


class ObjectGraphReader:
    """A `CheckpointReader` over an object-based checkpoint's reader, naming each variable by
    its canonical object path (unescaped local names joined with "/").

    Slots of legacy optimizers are `<variable>/.OPTIMIZER_SLOT/<optimizer path>/<slot>`, other
    attributes than a variable's value `<path>/.ATTRIBUTES/<name>`; the object graph stays
    `_CHECKPOINTABLE_OBJECT_GRAPH`, and a key no node names keeps its key.
    """

    def __init__(self, inner: CheckpointReader) -> None:
        self.inner = inner
        self.prefix: Path = inner.prefix
        where = f"{self.prefix}.index: {OBJECT_GRAPH_KEY}"
        listing = inner.variables()
        values = inner.read_string(OBJECT_GRAPH_KEY)
        if len(values) != 1:
            raise InputError(f"{where}: holds {len(values)} strings, not one object graph")
        try:
            self.nodes = parse_object_graph(values[0])
            named = object_names(self.nodes, enumerate_paths(self.nodes))
        except ValueError as e:
            raise InputError(f"{where}: bad object graph: {e}") from None
        self._key: dict[str, str] = {}
        self._paths: dict[str, tuple[str, ...]] = {}
        for key in listing:
            names = named[key][1] if key in named and key != OBJECT_GRAPH_KEY else ()
            name = names[0] if names else key
            if name in self._key:
                raise InputError(
                    f"{where}: keys {self._key[name]} and {key} both have the object path {name}"
                )
            self._key[name] = key
            self._paths[name] = names or (key,)
        self._vars = {n: replace(listing[self._key[n]], name=n) for n in sorted(self._key)}

    def variables(self) -> dict[str, VariableInfo]:
        return self._vars

    def key(self, name: str) -> str:
        """The bundle key of the variable named `name`."""
        try:
            return self._key[name]
        except KeyError:
            raise InputError(f"{self.prefix}.index: no variable named {name}") from None

    def paths(self, name: str) -> tuple[str, ...]:
        """Every name of the variable `name` (its object paths), the canonical one first."""
        self.key(name)
        return self._paths[name]

    def read(self, name: str) -> np.ndarray:
        return self.inner.read(self.key(name))

    def read_string(self, name: str) -> list[bytes]:
        return self.inner.read_string(self.key(name))

    def data_file(self, name: str) -> Path:
        return self.inner.data_file(self.key(name))

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> ObjectGraphReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
