"""ComfyUI entry point of the NASA node pack (Negative-Away Steer Attention). Where ComfyUI has the V3 node API
(comfy_api.latest, v0.3.59 and later) the nodes load as V3 through ``comfy_entrypoint``; elsewhere as V1 through
``NODE_CLASS_MAPPINGS``. Same node ids, inputs and display names either way. (ComfyUI's loader takes
NODE_CLASS_MAPPINGS first when a pack has both, so only one of them is defined here.)"""
from . import nodes as _nodes

if _nodes.V3:
    comfy_entrypoint = _nodes.comfy_entrypoint
    __all__ = ["comfy_entrypoint"]
else:
    NODE_CLASS_MAPPINGS = _nodes.NODE_CLASS_MAPPINGS
    NODE_DISPLAY_NAME_MAPPINGS = _nodes.NODE_DISPLAY_NAME_MAPPINGS
    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
