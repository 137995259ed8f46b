"""NASA for joint-attention DiTs on ComfyUI with the attention override (v0.3.60+): the negative text rides
through each block as extra text rows, and the override keeps it apart.

What NASA means on joint attention (as for FLUX.1 in ``joint.py``): the generated image tokens' attention to the
negative text is subtracted,

    Z_img = joint_attn(q_img over the model's own sequence) - alpha * softmax(q_img K_neg^T / sqrt d) V_neg

where ``K_neg``/``V_neg`` are what the block's own text branch makes of the negative. Every other row of the
joint attention (the positive text, edit/reference latents, glyph or vision tokens) is left exactly as the model
computes it, and those extra tokens are never subtracted.

How the negative reaches each block's own text branch, without a copy of any block: at every block up to the last
steered one, NASA's patch appends the negative's hidden states to the block's text rows (and their rotary
positions to ``pe``), then runs the block's own forward (or the patch that held the slot before) with an
attention override. The block therefore projects, normalises, rotates, modulates and updates the negative with its
own code and weights; the override receives the joint call over ``[.., positive text, negative, ..]`` and

* runs the model's own attention on the original rows only (the negative rows cut out, the block's mask as it
  was), so every original row is computed as without NASA;
* lets the negative rows attend over ``[negative; image]`` (the ``full+`` reading of ``joint.py``: what the text
  branch computes for a prompt that is the negative), with the negative's padding masked;
* subtracts ``alpha * softmax(q_img K_neg^T) V_neg`` from the generated image rows only, over the negative's real
  tokens (padding never leaks in).

After the block the patch takes the negative rows back out of the text (or, in single-stream blocks, the joint)
rows, so nothing outside NASA's blocks sees a changed shape. What differs per family (where the text sits, how the
negative is embedded, its rotary positions, which image rows are generated) is a ``JointRowsFamily`` in
``joint_families.py``.

Cost: the negative's tokens through the text branch of the steered blocks (and the blocks before them) plus two
small attention calls per block: the paper's "full+" floor (benchmarks/bench_families.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from ..attention import NASAInputError
from .base import NASAAdapter, NASASettings
from .comfy_runtime import HAS_WRAP_ATTN, NASAObjectPatch, comfy_release, override_call_options, steer_rows
from .joint import JointNASARun, install_joint_blocks


class RowsRun(JointNASARun):
    """NASARun that remembers the latent's shape of the call: rotary positions and the number of generated image
    tokens depend on it."""

    def plan(self, x, timestep, c, cond_or_uncond, model_sampling=None):
        state = super().plan(x, timestep, c, cond_or_uncond, model_sampling)
        if state is not None:
            t = model_sampling.timestep(timestep).float() if model_sampling is not None else timestep
            extra = self.settings.negative_extra
            if state.source == "prompt":  # the prompt's own, batched with its latent rows: those steered
                extra = {k: v if state.neg_rows is None else v[state.neg_rows] for k, v in (state.extra or {}).items()}
            state.call_info = CallInfo(tuple(x.shape), t, negative_extra=extra)
        return state


@dataclass
class CallInfo:
    """What a family's description may read about the call: the latent's shape and the timesteps the diffusion
    model receives."""
    latent_shape: Tuple[int, ...]
    model_timestep: Optional[torch.Tensor]
    call_pe: Optional[torch.Tensor] = None  # the rotary embedding the first NASA block received
    negative_extra: Optional[dict] = None   # the negative's conditioning dict (HiDream's Llama states): the model-wide
                                            # one's, or a prompt's rows of the steered latents


class NegativeRows:
    """The negative of one denoiser call as it runs through the blocks: hidden states for every batch row
    ([B, T, C]; rows NASA does not steer carry zeros and are ignored), the batch rows it steers, which of its tokens
    are real (not padding), and its rotary positions."""

    def __init__(self, hidden, rows, valid):
        self.hidden = hidden
        self.rows = rows      # list of batch rows NASA steers (their alpha is the call state's)
        self.valid = valid    # [B, T] bool: real tokens (padding: False)
        self.text_len = None  # the positive text rows of the current call (set by the first block)
        self.state = None
        self._pe = {}

    @property
    def tokens(self):
        return self.hidden.shape[1]

    def pe_for(self, tokens: int, family, dm, info):
        """Rotary embedding rows for ``tokens`` negative tokens (the family's rule for a prompt that long)."""
        if tokens not in self._pe:
            self._pe[tokens] = family.negative_pe(dm, tokens, info, self.hidden.device)
        return self._pe[tokens]


def _key_mask(valid: torch.Tensor, extra: int, dtype, front: bool = True) -> Optional[torch.Tensor]:
    """Additive [B, 1, 1, T (+ extra)] mask hiding the negative's padding; None when it has none."""
    if valid.is_meta or bool(valid.all()):
        return None
    m = torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill(~valid, float("-inf"))
    if extra:
        pad = torch.zeros((valid.shape[0], extra), dtype=dtype, device=valid.device)
        m = torch.cat((m, pad) if front else (pad, m), dim=1)
    return m[:, None, None, :]


class RowsBlockPatch:
    """One block's slot (a ``dit`` replace patch, or the block's own forward for families without one): carries
    the negative rows through the block and, when ``apply`` is set, steers its generated image rows. Deep copies
    (ModelPatcher.clone) share it."""

    def __init__(self, run: RowsRun, family, kind: str, index: int, apply: bool, previous=None):
        self.run = run
        self.family = family
        self.kind = kind            # "double" (text and image apart) or "single" (one joint sequence)
        self.index = index
        self.apply = apply
        self.previous = previous

    def __deepcopy__(self, memo):
        return self

    # -- the negative of this call
    def rows_for(self, state, info: CallInfo, device, dtype) -> NegativeRows:
        rows = getattr(state, "_nasa_rows", None)
        if rows is not None:
            return rows
        batch = info.latent_shape[0]
        steered = list(range(batch)) if state.rows is None else list(state.rows)
        neg = state.negative.to(device=device)
        if state.neg_rows is not None:
            neg = neg[state.neg_rows]
        elif neg.shape[0] != len(steered):
            neg = neg.expand(len(steered), *neg.shape[1:])
        neg, valid = self.family.negative_tokens(neg, info)
        raw = torch.zeros((batch,) + tuple(neg.shape[1:]), dtype=neg.dtype, device=device)
        raw[steered] = neg
        full_valid = torch.ones((batch, neg.shape[1]), dtype=torch.bool, device=device)
        full_valid[steered] = valid
        dm = self.run.diffusion_model
        info.steered_rows = steered
        info.negative_source = state.source
        hidden = self.family.embed(dm, raw.to(dtype), full_valid, info)
        if isinstance(hidden, tuple):  # the family pads the embedded negative as it pads a prompt (Z-Image)
            hidden, full_valid = hidden
        rows = NegativeRows(hidden, steered, full_valid)
        rows.state = state
        state._nasa_rows = rows
        return rows

    def __call__(self, args, extra):
        original = extra["original_block"]
        self.run.layer_calls += 1
        state = self.run.state_for(args)
        to = args.get("transformer_options")
        if state is None or to is None:
            return self.previous(args, extra) if self.previous is not None else original(args)
        f = self.family
        info = state.call_info
        if info.call_pe is None:
            info.call_pe = args.get("pe")
        img = args[f.img_key]
        rows = self.rows_for(state, info, img.device, img.dtype)
        # In the joint sequence (and in pe) the negative goes right after the positive text: [text; neg; image]
        # for text-first families, [image; text; neg] for image-first ones. `at` is that index. A family may add
        # rows of its own to the negative for this block only (HiDream: each block's fresh Llama layer).
        dm = self.run.diffusion_model
        fresh = f.fresh_rows(dm, rows, self.kind, self.index, info)
        neg = rows.hidden if fresh is None else torch.cat((rows.hidden, fresh.to(rows.hidden.dtype)), dim=1)
        t_stream, t = rows.tokens, neg.shape[1]
        if self.kind == "double":
            txt = args[f.txt_key]
            text, n_img = txt.shape[1], img.shape[1]
            rows.text_len = text
            new_args = {**args, f.txt_key: torch.cat((txt, neg), dim=1)}
        else:
            text = rows.text_len
            if text is None:  # single-stream families: no double block ran first
                text = f.single_text_len(dm, args, info)
            n_img = img.shape[1] - text
        at = n_img + text if f.image_first else text
        if self.kind == "single":
            new_args = {**args, f.img_key: torch.cat((img[:, :at], neg, img[:, at:]), dim=1)}
        image_region = (0, n_img) if f.image_first else (text, text + n_img)
        pe = args.get("pe")
        neg_pe = rows.pe_for(t, f, dm, info)
        if pe is not None and neg_pe is not None:
            # pe_embedder gives [1, 1, tokens, ...]; some releases' families move the token axis to 1 (Qwen-Image
            # before v0.3.68): find it by its length
            axis = 2 if pe.dim() > 2 and pe.shape[2] == text + n_img else 1
            neg_pe = neg_pe.to(pe.dtype).movedim(2, axis)
            neg_pe = neg_pe.expand(pe.shape[0], *neg_pe.shape[1:])
            new_args["pe"] = torch.cat((pe.narrow(axis, 0, at), neg_pe, pe.narrow(axis, at, pe.shape[axis] - at)),
                                       dim=axis)
        gen = f.generated_rows(dm, image_region, info)
        valid = rows.valid if fresh is None else torch.cat(
            (rows.valid, torch.ones(fresh.shape[:2], dtype=torch.bool, device=rows.valid.device)), dim=1)
        override, called = self._override(to, rows, at, gen, image_region, text + n_img + t, t, valid)
        new_args["transformer_options"] = {**to, "optimized_attention_override": override}
        out = self.previous(new_args, extra) if self.previous is not None else original(new_args)
        if not called[0]:
            raise NASAInputError(
                f"NASA: {f.name} {self.kind} block {self.index} made no joint attention call NASA recognises in this "
                f"ComfyUI ({comfy_release()}); its block is not the one NASA knows")
        out = dict(out)
        if self.kind == "double":
            txt_out = out[f.txt_key]
            rows.hidden = txt_out[:, text:text + t_stream]
            out[f.txt_key] = txt_out[:, :text]
        else:
            x_out = out[f.img_key]
            rows.hidden = x_out[:, at:at + t_stream]
            out[f.img_key] = torch.cat((x_out[:, :at], x_out[:, at + t:]), dim=1)
        return out

    def _override(self, to, rows: NegativeRows, at: int, gen: Tuple[int, int], image_region: Tuple[int, int],
                  length: int, t: int, valid_all: torch.Tensor):
        previous_override = to.get("optimized_attention_override")
        called = [False]
        patch = self

        def override(func, *a, **kw):
            q, k, v = a[:3]
            skip = bool(kw.get("skip_reshape", False))
            seq = 2 if skip else 1
            if called[0] or q.shape[seq] != length or k.shape[seq] != length:
                return previous_override(func, *a, **kw) if previous_override is not None else func(*a, **kw)
            called[0] = True
            heads = a[3] if len(a) > 3 else kw["heads"]
            neg_kw = override_call_options(kw)

            def attend(qq, kk, vv, _heads=None, mask=None):  # the core's (q, k, v, heads, mask) form
                options = neg_kw if mask is None else {**neg_kw, "mask": mask}
                if previous_override is not None:
                    return previous_override(func, qq, kk, vv, heads, **options)
                return func(qq, kk, vv, heads, **options)

            def cut(x):
                return torch.cat((x.narrow(seq, 0, at), x.narrow(seq, at + t, x.shape[seq] - at - t)), dim=seq)

            q_kept = cut(q)  # the original rows, also the generated image's queries below
            kept = (q_kept, cut(k), cut(v)) + tuple(a[3:])
            out = previous_override(func, *kept, **kw) if previous_override is not None else func(*kept, **kw)
            if out.dim() != 3:
                raise NASAInputError(f"NASA: {patch.family.name}'s joint attention returned shape {tuple(out.shape)}; "
                                     "NASA expects [batch, tokens, heads * dim]")
            sel = rows.rows
            neg_q, neg_k, neg_v = (x.narrow(seq, at, t)[sel] for x in (q, k, v))
            lo, hi = image_region
            # image region in the call's coordinates (the negative sits at `at`, before or after the image)
            shift = t if lo >= at else 0
            img_k = k[sel].narrow(seq, lo + shift, hi - lo)
            img_v = v[sel].narrow(seq, lo + shift, hi - lo)
            valid = valid_all[sel]
            neg_out = attend(neg_q, torch.cat((neg_k, img_k), dim=seq), torch.cat((neg_v, img_v), dim=seq),
                             mask=_key_mask(valid, hi - lo, q.dtype))
            full_neg = torch.zeros((out.shape[0], t, out.shape[2]), dtype=out.dtype, device=out.device)
            full_neg[sel] = neg_out.to(out.dtype)
            if patch.apply:  # the generated image's rows only: the text and every other row are the model's own
                out = steer_rows(out, q_kept, neg_k, neg_v, heads, rows.state, attend, in_place=True,
                                 neg_mask=_key_mask(valid, 0, q.dtype), aligned=True, tokens=slice(*gen), seq_dim=seq)
                rows.state.touched += 1
            return torch.cat((out[:, :at], full_neg, out[:, at:]), dim=1)

        return override, called


class RowsObjectBlock(NASAObjectPatch):
    """For families whose blocks have no ``dit`` replace slot (Z-Image / Lumina 2, HiDream): an object patch in the
    block's place that runs ``patch`` around the block's own forward. The block's children are registered under their own
    names, so state-dict names (LoRA keys) are what they are without NASA."""

    def __init__(self, patch: RowsBlockPatch, original, previous):
        super().__init__(original, previous)
        object.__setattr__(self, "patch", patch)

    @property
    def apply(self) -> bool:
        """Whether this block steers (or only carries the negative on to the next one)."""
        return self.patch.apply

    def forward(self, *args, **kwargs):
        # the family knows its block's signature: it packs the call into the dit-style args the patch takes
        return self.patch.family.object_forward(self.occupant, self.patch, *args, **kwargs)


class RowsAdapter(NASAAdapter):
    """One joint-attention family on ComfyUI with the attention override, described by ``spec``."""

    run_class = RowsRun

    def __init__(self, spec):
        self.spec = spec
        self.family = spec.display

    def matches(self, model_patcher) -> bool:
        return self.spec.matches(model_patcher)

    def context_width(self, model_patcher) -> int:
        return self.spec.context_width(model_patcher.model.diffusion_model)

    def install(self, model_patcher, settings: NASASettings, run: RowsRun) -> int:
        if not HAS_WRAP_ATTN:
            raise NASAInputError(
                f"NASA on {self.spec.display} needs ComfyUI's attention override (v0.3.60 or later); this ComfyUI "
                f"({comfy_release()}) has the model but not the override: update ComfyUI")
        spec = self.spec

        def place(kind, index, block, apply, last):
            if spec.slot == "object":  # blocks without a dit slot: an object patch in the block's place
                return "object", spec.block_path(kind, index), lambda original, previous: RowsObjectBlock(
                    RowsBlockPatch(run, spec, kind, index, apply), original, previous)
            return "dit", (f"{kind}_block", index), \
                lambda _, previous: RowsBlockPatch(run, spec, kind, index, apply, previous=previous)
        return install_joint_blocks(model_patcher, run, spec.block_lists, settings.blocks, spec.display, place)
