"""The pack's nodes, each defined once (``schema.NodeDef``). ``NODE_CLASS_MAPPINGS`` are the V1 classes (what
ComfyUI loads where it has no V3 API, and what the pack's code and tests call); ``V3`` says whether this ComfyUI
has the V3 API (``comfy_api.latest``), and ``comfy_entrypoint`` then exposes the same nodes as V3."""
from . import nasa_nodes, world_nodes
from .schema import v3_api, v3_entrypoint

NODE_DEFS = nasa_nodes.NODE_DEFS + world_nodes.NODE_DEFS
NODE_CLASS_MAPPINGS = {d.node_id: cls for d, cls in zip(NODE_DEFS, (
    nasa_nodes.NASANegativeConditioning, nasa_nodes.ApplyNASAModelPatch, nasa_nodes.ApplyNASAModelPatchAdvanced,
    world_nodes.LoadNASAWorldModel))}
NODE_DISPLAY_NAME_MAPPINGS = {d.node_id: d.display_name for d in NODE_DEFS}
V3 = v3_api() is not None
comfy_entrypoint = v3_entrypoint(NODE_DEFS) if V3 else None

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "NODE_DEFS", "V3", "comfy_entrypoint"]
