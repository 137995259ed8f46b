"""Each node is defined once (``NodeDef``: id, display name, inputs with tooltips, outputs, the function it runs)
and exposed in the form the running ComfyUI loads: a V3 ``io.ComfyNode`` where ``comfy_api.latest`` exists
(v0.3.59 and later), a V1 class (``INPUT_TYPES``, ``FUNCTION``) elsewhere. Both have the same node id, the same
inputs in the same order (required first) and the same display name, so saved workflows load in either."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple


@dataclass(frozen=True)
class Input:
    name: str
    type: str                       # MODEL, CONDITIONING, FLOAT, BOOLEAN, STRING, COMBO
    tooltip: str
    optional: bool = False
    default: object = None
    min: Optional[float] = None
    max: Optional[float] = None
    step: Optional[float] = None
    choices: Optional[Callable[[], list]] = None  # COMBO: the options, read when ComfyUI asks


@dataclass(frozen=True)
class Output:
    type: str
    name: str
    tooltip: str


@dataclass(frozen=True)
class NodeDef:
    node_id: str
    display_name: str
    description: str
    inputs: Tuple[Input, ...]
    outputs: Tuple[Output, ...]
    function: Callable              # called with the inputs as keyword arguments; returns a tuple
    function_name: str              # the V1 method name (also how the pack's own code and tests call it)
    category: str = "NASA"
    search_aliases: Tuple[str, ...] = field(default_factory=tuple)

    def ordered_inputs(self):
        return [i for i in self.inputs if not i.optional] + [i for i in self.inputs if i.optional]


# ---------------------------------------------------------------------------------------------------------------
# V1


def _v1_input(i: Input):
    options = {"tooltip": i.tooltip}
    for key in ("default", "min", "max", "step"):
        if getattr(i, key) is not None:
            options[key] = getattr(i, key)
    if i.type == "COMBO":
        return (i.choices(), options)
    return (i.type, options)


def build_v1(d: NodeDef) -> type:
    def input_types(cls):
        types = {"required": {i.name: _v1_input(i) for i in d.ordered_inputs() if not i.optional}}
        optional = {i.name: _v1_input(i) for i in d.ordered_inputs() if i.optional}
        if optional:
            types["optional"] = optional
        return types

    def run(self, *args, **kwargs):
        return d.function(*args, **kwargs)

    return type(d.node_id, (), {
        "__doc__": d.description, "NODE_DEF": d, "INPUT_TYPES": classmethod(input_types),
        "RETURN_TYPES": tuple(o.type for o in d.outputs), "RETURN_NAMES": tuple(o.name for o in d.outputs),
        "OUTPUT_TOOLTIPS": tuple(o.tooltip for o in d.outputs), "FUNCTION": d.function_name,
        "CATEGORY": d.category, "DESCRIPTION": d.description, "SEARCH_ALIASES": list(d.search_aliases),
        d.function_name: run})


# ---------------------------------------------------------------------------------------------------------------
# V3


def v3_api():
    """ComfyUI's V3 node API (``comfy_api.latest``: io and ComfyExtension), or None where this ComfyUI has none."""
    try:
        from comfy_api.latest import ComfyExtension, io
    except ImportError:
        return None
    needed = ("ComfyNode", "Schema", "NodeOutput", "Model", "Conditioning", "Float", "Boolean", "String", "Combo", "Clip",
              "Vae")
    if not all(hasattr(io, name) for name in needed):
        return None
    return io, ComfyExtension


def _v3_type(io, name: str):
    return {"MODEL": io.Model, "CONDITIONING": io.Conditioning, "FLOAT": io.Float, "BOOLEAN": io.Boolean,
            "STRING": io.String, "COMBO": io.Combo, "CLIP": io.Clip, "VAE": io.Vae}[name]


def _v3_input(io, i: Input):
    kwargs = {"tooltip": i.tooltip, "optional": i.optional}
    if i.type == "FLOAT":
        kwargs.update(default=i.default, min=i.min, max=i.max, step=i.step)
    elif i.type in ("BOOLEAN", "STRING"):
        kwargs.update(default=i.default)
    elif i.type == "COMBO":
        kwargs.update(options=i.choices(), default=i.default)
    return _v3_type(io, i.type).Input(i.name, **{k: v for k, v in kwargs.items() if v is not None})


def build_v3(d: NodeDef) -> type:
    io, _ = v3_api()
    schema_fields = {f.name for f in dataclasses.fields(io.Schema)}

    def define_schema(cls):
        extra = {"search_aliases": list(d.search_aliases)} if "search_aliases" in schema_fields else {}
        return io.Schema(node_id=d.node_id, display_name=d.display_name, category=d.category,
                         description=d.description, inputs=[_v3_input(io, i) for i in d.ordered_inputs()],
                         outputs=[_v3_type(io, o.type).Output(display_name=o.name, tooltip=o.tooltip)
                                  for o in d.outputs], **extra)

    def execute(cls, **kwargs):
        return io.NodeOutput(*d.function(**kwargs))

    return type(d.node_id, (io.ComfyNode,), {"__doc__": d.description, "NODE_DEF": d,
                                             "define_schema": classmethod(define_schema),
                                             "execute": classmethod(execute)})


def v3_entrypoint(defs):
    """``comfy_entrypoint`` for the pack: a ComfyExtension listing the V3 nodes."""
    io, ComfyExtension = v3_api()
    classes = [build_v3(d) for d in defs]

    class NASAExtension(ComfyExtension):
        async def get_node_list(self):
            return list(classes)

    async def comfy_entrypoint():
        return NASAExtension()

    return comfy_entrypoint
