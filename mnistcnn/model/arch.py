"""The architecture family: a compact CNN declared as data, and what it costs.

A declaration is a list of blocks applied in order to the 1x28x28 image, then a head.
A block is `convs` convolutions of `channels` outputs, each followed by its norm and a
ReLU, then optionally a 2x2 pool and a dropout; the head flattens (or averages) what
is left and maps it to ten logits. The named models are declared the same way (NAMED),
so a user's architecture and the project's are checked, counted and built by one code.

Pure Python, no torch: the parameter count and multiply-adds per image of any
declaration are known in milliseconds (`make budget`); mnistcnn.model.models builds the
nn.Module from the same layer plan, so the count is the module's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

IMAGE_SIZE, NUM_CLASSES = 28, 10


class ShapeError(ValueError):
    """A declaration that cannot be built; `key` is where, below the architecture (blocks[2].pool)."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason

    def under(self, prefix: str) -> str:
        """The error as its full key says it: `prefix.key: reason` (`prefix: reason` for the whole)."""
        return f"{prefix}{'.' * bool(self.key)}{self.key}: {self.reason}"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _kinds(*names: str) -> object:
    return Annotated[Literal[names], Field(description="one of " + ", ".join(names))]


class Block(_Spec):
    """`convs` convolutions, each conv -> norm -> ReLU, then the pool, then the dropout (a max-pool
    runs before a ReLU it follows: the same function, cheaper; _block_layers)."""

    channels: Annotated[int, Field(ge=1, le=1024, description="an integer in [1, 1024]")]  # of every conv
    convs: Annotated[int, Field(ge=1, le=8, description="an integer in [1, 8]")] = 1
    kernel: Annotated[int, Field(ge=1, le=7, description="an integer in [1, 7]")] = 3
    padding: _kinds("same", "valid") = "same"  # same: the size is kept (odd kernels); valid: shrinks by kernel - 1
    norm: _kinds("bn", "bn_both", "none") = "bn"  # bn: BatchNorm before the ReLU; bn_both: and after it
    bias: Annotated[bool | None, Field(description="true, false, or null: only where no batch norm follows")] = None
    pool: _kinds("none", "max", "avg") = "none"  # 2x2, stride 2: halves the size (rounding down)
    dropout: _kinds("none", "element", "channel") = "none"  # channel: whole feature maps (Dropout2d)


class Head(_Spec):
    """From the last block's feature maps to ten logits."""

    pool: _kinds("flatten", "avg") = "flatten"  # avg: average each map to one value first
    dropout: _kinds("none", "element") = "none"  # before the linear layer


class Arch(_Spec):
    """A declared architecture; its dropout layers take `dropout` unless train.dropout says otherwise."""

    blocks: Annotated[list[Block], Field(min_length=1, max_length=16, description="a list of 1 to 16 blocks")]
    head: Head = Head()
    dropout: Annotated[float, Field(ge=0, lt=1, description="a number in [0, 1)")] = 0.0

    @model_validator(mode="after")
    def _buildable(self) -> Arch:
        plan(self)  # raises ShapeError, which pydantic reports under this architecture's key
        return self


@dataclass(frozen=True)
class Layer:
    """One module of the plan: its kind, channels in and out, and the feature map it leaves (C, H, W)."""

    kind: str  # conv, bn, relu, maxpool, avgpool, dropout, dropout2d, globalavg, flatten, linear
    c_in: int
    c_out: int
    size: int  # H = W after the layer (1 after flatten)
    kernel: int = 0
    padding: int = 0
    bias: bool = False


def _block_layers(block: Block, key: str, c_in: int, size: int) -> list[Layer]:
    layers = []
    if block.padding == "same" and block.kernel % 2 == 0:
        raise ShapeError(f"{key}.kernel", f"{block.kernel} is even: padding `same` needs an odd kernel")
    for _ in range(block.convs):
        pad = block.kernel // 2 if block.padding == "same" else 0
        size = size + 2 * pad - block.kernel + 1
        if size < 1:
            raise ShapeError(f"{key}.kernel", f"a {block.kernel}x{block.kernel} `valid` conv does not fit "
                                              f"the {size + block.kernel - 1}x{size + block.kernel - 1} map here")
        bias = block.norm == "none" if block.bias is None else block.bias
        layers.append(Layer("conv", c_in, block.channels, size, block.kernel, pad, bias))
        c_in = block.channels
        norm = {"bn": ["bn", "relu"], "bn_both": ["bn", "relu", "bn"], "none": ["relu"]}[block.norm]
        layers += [Layer(kind, c_in, c_in, size) for kind in norm]
    if block.pool != "none":
        if size < 2:
            raise ShapeError(f"{key}.pool", f"the map is {size}x{size} here: a 2x2 pool would leave nothing")
        size //= 2
        # A max-pool commutes with the ReLU before it, bit for bit forward and backward (tests/test_models.py):
        # pooling first gives the ReLU a quarter of the values.
        last = [replace(layers.pop(), size=size)] if block.pool == "max" and layers[-1].kind == "relu" else []
        layers += [Layer(f"{block.pool}pool", c_in, c_in, size), *last]
    if block.dropout != "none":
        layers.append(Layer("dropout2d" if block.dropout == "channel" else "dropout", c_in, c_in, size))
    return layers


def plan(arch: Arch) -> list[Layer]:
    """Every module in order, from the (1, 28, 28) image to (10,) logits; ShapeError if one cannot be."""
    layers, channels, size = [], 1, IMAGE_SIZE
    for i, block in enumerate(arch.blocks):
        layers += _block_layers(block, f"blocks[{i}]", channels, size)
        channels, size = layers[-1].c_out, layers[-1].size
    if arch.head.pool == "avg":
        layers.append(Layer("globalavg", channels, channels, 1))
        size = 1
    features = channels * size * size
    layers.append(Layer("flatten", channels, features, 1))
    if arch.head.dropout != "none":
        layers.append(Layer("dropout", features, features, 1))
    layers.append(Layer("linear", features, NUM_CLASSES, 1, bias=True))
    return layers


def count_parameters(arch: Arch) -> int:
    """Trainable parameters of the built model: weights and biases of convs and linear, BN's scale and shift."""
    total = 0
    for layer in plan(arch):
        if layer.kind in ("conv", "linear"):
            total += layer.c_out * layer.c_in * layer.kernel**2 if layer.kind == "conv" else layer.c_out * layer.c_in
            total += layer.c_out if layer.bias else 0
        elif layer.kind == "bn":
            total += 2 * layer.c_out
    return total


def count_macs(arch: Arch) -> int:
    """Multiply-adds to classify one image: those of the convolutions and the linear layer."""
    total = 0
    for layer in plan(arch):
        if layer.kind == "conv":
            total += layer.c_out * layer.c_in * layer.kernel**2 * layer.size**2
        elif layer.kind == "linear":
            total += layer.c_out * layer.c_in
    return total


def _blocks(*blocks: dict) -> list[Block]:
    return [Block(**block) for block in blocks]


_REFERENCE = {"padding": "valid", "norm": "bn_both", "bias": True}  # cnn24k's blocks
NAMED: dict[str, Arch] = {
    # The 24,394-parameter reference network (no padding: 28 -> 26 -> 24 -> 12 -> 10).
    "cnn24k": Arch(blocks=_blocks({"channels": 16, **_REFERENCE},
                                  {"channels": 32, **_REFERENCE, "pool": "max", "dropout": "element"},
                                  {"channels": 64, **_REFERENCE}),
                   head=Head(pool="avg", dropout="element"), dropout=0.1),
    # The 8,890-parameter reference network (28 -> 14 -> 7 -> 3).
    "cnn9k": Arch(blocks=_blocks({"channels": 8, "bias": True, "pool": "max"},
                                 {"channels": 16, "bias": True, "pool": "max"},
                                 {"channels": 32, "bias": True, "pool": "max", "dropout": "channel"}),
                  dropout=0.2),
    # 22,350 parameters, built to train in one epoch: halve the resolution early so most of the
    # arithmetic runs at 14x14 and 7x7 (1.4M multiply-adds per image, cnn24k's third).
    "quick25k": Arch(blocks=_blocks({"channels": 12, "pool": "max"}, {"channels": 24, "pool": "max"},
                                    {"channels": 40}, {"channels": 24, "pool": "max", "dropout": "element"})),
    # 9,610 parameters: five narrow convs, two poolings, and a global average pool in place of a
    # large linear layer, so the parameters go to features, not the head.
    "tiny10k": Arch(blocks=_blocks({"channels": 8, "pool": "max"}, {"channels": 16, "convs": 2, "pool": "max"},
                                   {"channels": 20}, {"channels": 16}),
                    head=Head(pool="avg", dropout="element")),
}
DECLARED = "declared"  # train.model's value that selects train.arch


def resolve(model: str, declared: Arch) -> Arch:
    """The architecture train.model selects: a named one, or the declared train.arch."""
    return declared if model == DECLARED else NAMED[model]


def describe(arch: Arch) -> str:
    """One line a person reads: 'conv 12, maxpool | conv 24, maxpool | ... | flatten, linear 216->10'."""
    parts = []
    for block in arch.blocks:
        convs = f"conv {block.channels}" + (f" x{block.convs}" if block.convs > 1 else "")
        parts.append(", ".join([convs] + [f"{block.pool}pool"] * (block.pool != "none")))
    head = plan(arch)[-1]
    return " | ".join(parts + [f"{arch.head.pool}, linear {head.c_in}->{head.c_out}"])
