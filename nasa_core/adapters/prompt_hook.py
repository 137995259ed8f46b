"""NASA Negative Conditioning on its own, on any ComfyUI with conditioning hooks (``comfy.hooks``'s
``TransformerOptionsHook`` with ``EnumHookScope.HookedOnly``, from v0.3.30).

The node attaches a hook to its prompt. ComfyUI merges a hooked prompt's ``transformer_options`` into that prompt's
denoiser calls only (hooked prompts are never batched with others), so the hook's ``APPLY_MODEL`` wrapper
(``PromptNASAWrapper``) runs exactly for the calls of this prompt. There it installs NASA on the model being
sampled (``apply_nasa`` on a clone of its ModelPatcher, no model-wide negative, kept per loaded patcher), puts that
clone's attention replace patches into the call's ``transformer_options``, and lets the clone's ``NASARun`` plan
the call from the negative the prompt carries, exactly as Apply NASA Model Patch would. Nothing is installed on the
MODEL itself; the negative's K/V are recomputed every call (nothing to free afterwards). Wan, whose NASA is an
object patch, gets ``dit`` replace patches that steer its text cross-attention through an attention override
instead (v0.3.60+, where Wan's blocks pass transformer_options to their attention).

Where the MODEL also went through Apply NASA Model Patch, its wrapper takes the prompt's negative first (and this
wrapper then sees none and steps aside). PixArt (whose blocks never get transformer_options) and Wan before
v0.3.60 cannot be reached from ``transformer_options``: there the prompt's negative stays unclaimed and the user is
told to add Apply NASA Model Patch.
"""
from __future__ import annotations

import weakref
from typing import Optional

from .comfy_runtime import PROMPT_KEYS, PROMPT_NEGATIVE_KEY, advise_prompt_negative

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
    """ComfyUI's APPLY_MODEL executor in the ``apply_model(x, t, **c)`` form NASARun wraps."""

    def __init__(self, executor, base_model):
        self.executor = executor
        self.__self__ = base_model  # NASARun reads the model (its sampling, its patcher) from here

    def __call__(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        return self.executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)


class PromptNASAWrapper:
    """The APPLY_MODEL wrapper a hooked prompt carries."""

    def __init__(self, alpha_hint: float):
        self.alpha_hint = alpha_hint  # the settings' alpha; the prompt's own alpha travels with its negative
        self._installed: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def __deepcopy__(self, memo):
        return self

    def installation(self, patcher):
        """(NASARun, replace patches) of NASA installed on a clone of ``patcher``; the patches are None where
        NASA's patches for this family are object patches (not reachable from transformer_options)."""
        entry = self._installed.get(patcher)
        if entry is None:
            from . import apply_nasa
            clone = apply_nasa(patcher, None, self.alpha_hint)
            run = clone.model_options["model_function_wrapper"]
            run.cacheable = False  # K/V recomputed per call: nothing outlives the call, nothing to free
            if not any(kind == "object" for kind, _, _ in run.slots):
                replace = clone.model_options["transformer_options"]["patches_replace"]
                entry = (run, {kind: dict(replace[kind]) for kind in {k for k, _, _ in run.slots}})
            else:  # object patches cannot travel in transformer_options; Wan has a dit-slot route (v0.3.60+)
                entry = (run, None)
                from .wan import WanAdapter, hook_patches
                if WanAdapter().matches(patcher):
                    patches = hook_patches(patcher, run.settings, run)
                    if patches is not None:
                        run.slots = [("dit", key, patch) for key, patch in patches.items()]
                        entry = (run, {"dit": patches})
            self._installed[patcher] = entry
        return entry

    def __call__(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={},
                 **kwargs):
        base_model = executor.class_obj
        patcher = getattr(base_model, "current_patcher", None)
        run = replace = None
        if PROMPT_NEGATIVE_KEY in kwargs and patcher is not None:
            run, replace = self.installation(patcher)
            if replace is None:  # an object-patch family: the warning that follows gives the family's own advice
                advise_prompt_negative(kwargs[PROMPT_NEGATIVE_KEY], run.prompt_advice)
        if replace is None:  # no negative left for us (a NASA-patched model took it), or an object-patch family
            # the prompt's negative is not the model's input: drop it (the unclaimed warning says why), since some
            # families' forward takes no extra keywords (HiDream)
            kwargs = {k: v for k, v in kwargs.items() if k not in PROMPT_KEYS}
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        to = dict(transformer_options)
        to["patches_replace"] = {**to.get("patches_replace", {})}
        for kind, patches in replace.items():
            to["patches_replace"][kind] = {**to["patches_replace"].get(kind, {}), **patches}
        c = dict(kwargs, c_concat=c_concat, c_crossattn=c_crossattn, control=control, transformer_options=to)
        args = {"input": x, "timestep": t, "c": c, "cond_or_uncond": to.get("cond_or_uncond", [0])}
        return run(_ExecutorAsApplyModel(executor, base_model), args)


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
