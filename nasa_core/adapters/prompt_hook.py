"""NASA Negative Conditioning on its own, on any ComfyUI with conditioning hooks (``comfy.hooks``'s
``TransformerOptionsHook`` with ``EnumHookScope.HookedOnly``, from v0.3.30).

The node attaches a hook to its prompt. ComfyUI merges a hooked prompt's ``transformer_options`` into that prompt's
denoiser calls only (hooked prompts are never batched with others), so the hook's ``APPLY_MODEL`` wrapper
(``PromptNASAWrapper``) runs exactly for the calls of this prompt. There it installs NASA on the model being
sampled (``apply_nasa`` on a clone of its ModelPatcher, no model-wide negative, kept per loaded patcher), and lets
the clone's ``NASARun`` plan the call from the negative the prompt carries, exactly as Apply NASA Model Patch would.
The clone's patches reach the call two ways:

* replace patches (UNet ``attn2``, ``dit`` blocks) go into the call's ``transformer_options``;
* object patches (PixArt, Wan, Kandinsky 5, LTX, Z-Image / Lumina 2, HiDream: modules in the place of the model's
  own) are put into the live model for this call only and taken out in ``finally``, whatever the call ends with
  (an error, an interrupt). ComfyUI's own ``ObjectPatchHook`` would be the place, but it raises
  NotImplementedError on every release; this is what it would do, scoped to the hooked prompt's calls. The call's
  NASA decision is published for layers that get no ``transformer_options`` (``dit_crossattn.StatePublisher``);
* wrappers NASA adds inside the model call (Kandinsky 5's ``DIFFUSION_MODEL`` one) go into the call's
  ``transformer_options["wrappers"]``, where the model reads them.

Nothing is installed on the MODEL itself; the negative's K/V are recomputed every call (nothing to free afterwards).
Where the MODEL also went through Apply NASA Model Patch, its wrapper takes the prompt's negative first (and this
wrapper then sees none and steps aside).
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Optional

from .comfy_runtime import PROMPT_KEYS, PROMPT_NEGATIVE_KEY

HOOK_KEY = "comfyui_nasa_prompt_negative"


def hooks_api():
    """(hooks module, TransformerOptionsHook, HookGroup, HookedOnly scope), or None where this ComfyUI has none."""
    try:
        import comfy.hooks as hooks
    except ImportError:
        return None
    scope = getattr(getattr(hooks, "EnumHookScope", None), "HookedOnly", None)
    if not all(hasattr(hooks, n) for n in ("TransformerOptionsHook", "HookGroup", "set_hooks_for_conditioning")) \
            or scope is None:
        return None
    return hooks, hooks.TransformerOptionsHook, hooks.HookGroup, scope


class _ExecutorAsApplyModel:
    """ComfyUI's APPLY_MODEL executor in the ``apply_model(x, t, **c)`` form NASARun wraps; with ``publisher``
    (a ``StatePublisher``), the call's NASA decision is visible to layers that get no transformer_options."""

    def __init__(self, executor, base_model, publisher=None):
        self.executor = executor
        self.publisher = publisher
        self.__self__ = base_model  # NASARun reads the model (its sampling, its patcher) from here

    def __call__(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        if self.publisher is not None:
            return self.publisher(self.executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        return self.executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


@contextmanager
def object_patches_in_place(base_model, objects):
    """The clone's object patches ``[(path, patch)]`` in the live model for the duration of one call; what held each
    path is put back in ``finally``. Each patch chains over what held its path when it was made (``occupant``), so
    a path whose module has changed since is refused rather than dropped."""
    import comfy.utils
    swapped = []
    try:
        for path, patch in objects:
            live = comfy.utils.get_attr(base_model, path)
            if live is not patch.occupant:
                raise RuntimeError(f"NASA's prompt hook: {path} holds {type(live).__qualname__}, not the module its "
                                   f"patch was made over ({type(patch.occupant).__qualname__})")
            comfy.utils.set_attr(base_model, path, patch)
            swapped.append((path, live))
        yield
    finally:
        for path, live in reversed(swapped):
            comfy.utils.set_attr(base_model, path, live)


class PromptNASAWrapper:
    """The APPLY_MODEL wrapper a hooked prompt carries."""

    def __init__(self, alpha_hint: float):
        self.alpha_hint = alpha_hint  # the settings' alpha; the prompt's own alpha travels with its negative
        self._installed: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def __deepcopy__(self, memo):
        return self

    def installation(self, patcher):
        """(NASARun, replace patches by slot kind, object patches [(path, patch)]) of NASA installed on a clone of
        ``patcher``; made again where the live model no longer holds what an object patch was made over."""
        entry = self._installed.get(patcher)
        if entry is None or not all(_holds(patcher.model, path, patch.occupant) for path, patch in entry[2]):
            from . import apply_nasa
            clone = apply_nasa(patcher, None, self.alpha_hint)
            run = clone.model_options["model_function_wrapper"]
            run.cacheable = False  # K/V recomputed per call: nothing outlives the call, nothing to free
            replace = clone.model_options["transformer_options"].get("patches_replace", {})
            kinds = {kind for kind, _, _ in run.slots if kind != "object"}
            objects = [(path, patch) for kind, path, patch in run.slots if kind == "object"]
            entry = self._installed[patcher] = (run, {kind: dict(replace[kind]) for kind in kinds}, objects,
                                                _nasa_inner_wrappers(clone))
        return entry

    def __call__(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={},
                 **kwargs):
        base_model = executor.class_obj
        patcher = getattr(base_model, "current_patcher", None)
        if PROMPT_NEGATIVE_KEY not in kwargs or patcher is None:
            # no negative left for us (a NASA-patched model took it): the prompt's keys are not the model's input,
            # and some families' forward takes no extra keywords (HiDream)
            kwargs = {k: v for k, v in kwargs.items() if k not in PROMPT_KEYS}
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        run, replace, objects, wrappers = self.installation(patcher)
        to = dict(transformer_options, patches_replace=_merged(transformer_options, "patches_replace", replace))
        if wrappers:
            to["wrappers"] = _merged(transformer_options, "wrappers", wrappers)
        c = dict(kwargs, c_concat=c_concat, c_crossattn=c_crossattn, control=control, transformer_options=to)
        args = {"input": x, "timestep": t, "c": c, "cond_or_uncond": to.get("cond_or_uncond", [0])}
        if not objects:
            return run(_ExecutorAsApplyModel(executor, base_model), args)
        from .dit_crossattn import StatePublisher
        with object_patches_in_place(base_model, objects):
            return run(_ExecutorAsApplyModel(executor, base_model, StatePublisher(run.state_key)), args)


def _merged(options: dict, key: str, additions: dict) -> dict:
    """``options[key]`` (a dict of dicts: slot kind or wrapper type -> entries) with ``additions`` merged in, as a
    copy: the call's own options are not changed."""
    merged = dict(options.get(key, {}))
    for kind, entries in additions.items():
        merged[kind] = {**merged.get(kind, {}), **entries}
    return merged


def _nasa_inner_wrappers(clone) -> dict:
    """The wrappers NASA's install added to the clone inside the APPLY_MODEL call (Kandinsky 5's DIFFUSION_MODEL
    wrapper): the model reads them from the call's transformer_options, so they travel there. NASA's APPLY_MODEL
    ones (``StatePublisher``) are what this hook does itself."""
    import comfy.patcher_extension
    outer = comfy.patcher_extension.WrappersMP.APPLY_MODEL
    return {kind: {key: list(fns) for key, fns in keyed.items() if key.startswith("comfyui_nasa_")}
            for kind, keyed in getattr(clone, "wrappers", {}).items()
            if kind != outer and any(key.startswith("comfyui_nasa_") for key in keyed)}


def _holds(base_model, path: str, module) -> bool:
    import comfy.utils
    try:
        return comfy.utils.get_attr(base_model, path) is module
    except AttributeError:
        return False


def hook_prompt(conditioning: list, alpha: float) -> Optional[list]:
    """The conditioning with NASA's prompt hook attached (HookedOnly), or None where this ComfyUI has no hooks."""
    api = hooks_api()
    if api is None:
        return None
    hooks, TransformerOptionsHook, HookGroup, scope = api
    import comfy.patcher_extension
    wrapper_type = comfy.patcher_extension.WrappersMP.APPLY_MODEL
    hook = TransformerOptionsHook(transformers_dict={"wrappers": {wrapper_type: {HOOK_KEY: [PromptNASAWrapper(alpha)]}}},
                                  hook_scope=scope)
    group = HookGroup()
    group.add(hook)
    return hooks.set_hooks_for_conditioning(conditioning, group)
