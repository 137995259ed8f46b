"""NASA for the joint-attention DiTs: FLUX.1 (schnell, dev; ``comfy.ldm.flux``) and SD3 / SD3.5 (``mmdit``).

What NASA means here. These models have no text cross-attention: text and image tokens share one attention over
``[txt; img]``. NASA keeps that joint attention for every token and, for the image queries only, subtracts their
attention to the negative text:

    Z_img = joint_attn(q_img over [txt; img]) - alpha * softmax(q_img K_neg^T / sqrt d) V_neg

``K_neg``/``V_neg`` come from a negative text stream that runs through the text branch of the blocks with the
block's own weights (``txt_mod``/``txt_norm1``/``txt_attn.qkv`` for FLUX, ``context_block.pre_attention`` for SD3),
so they are what the block would make of the negative text. The text tokens' own update is untouched (their rows
of the joint attention are not changed), so extra context that other nodes append to the text (Redux image tokens,
IP-Adapter-style tokens) is attended as before and never subtracted.

How the negative stream advances between blocks (``NASASettings.negative_stream``):

* ``"full+"`` (default): the negative text's queries attend over ``[negative text; image]`` (the image keys and
  values of the current, steered image stream), then the block's text out-projection, gate and MLP: the stream
  is what the text branch would compute for a prompt that is the negative.
* ``"full"``: the negative text attends to itself only (cheaper; text tokens never did that in training).
* ``"kv"``: no stream at all: each block applies its text projection to the embedded negative.

Nothing of the negative stream can be cached between steps: the text branch is modulated by the timestep
embedding (and with ``"full+"`` it also reads the image).

Where the subtraction enters (exactness). The subtraction happens on the attention output, before the block's
image out-projection; the gate, the MLP and every later block see the steered residual, as in the paper's
cross-attention form. Two routes, one result:

* ComfyUI with ``transformer_options["optimized_attention_override"]`` (the modern tree): a ``dit`` replace
  patch runs the original block (or the patch that was in the slot before) with an attention override that
  steers the image rows of the block's joint attention call. The block's own forward runs unchanged.
* Older ComfyUI (the PyPI copy and every release before v0.3.60) has no attention override: the patch then runs
  the block from its own submodules in the order that ComfyUI's block forward uses them (``composed``), with the
  steering between the attention and the out-projection. Since ComfyUI does not maintain that copy, it is checked
  at run time: before its first use per block class, the block's own forward and the composed route (unsteered)
  run on the same inputs and must agree bit for bit, or NASA refuses with an error naming the release
  (``verify_composed_route``). The tests check it on every release of the matrix.

Blocks. ``double`` = the blocks with separate text and image weights (all 19 of FLUX.1, all of SD3's joint blocks),
``single`` = FLUX's 38 single-stream blocks. The Advanced node's input/middle/output switches select the
first/middle/last third of all blocks in run order. Default: the first third (``input``): on FLUX.1 exactly its
19 double blocks, on SD3/SD3.5 the first third of the joint blocks (13 of SD3.5-Large's 38, 8 of Medium's 24),
with the negative stream stopping at the last of them (see ``DEFAULT_JOINT_BLOCKS`` and README: stability).
"""
from __future__ import annotations

import torch

import comfy.ldm.modules.attention as comfy_attention

from ..attention import NASAInputError
from .base import NASAAdapter, NASASettings, chosen_positions, third_of
from .comfy_runtime import NASARun, install_patch, install_wrapper, override_call_options, steer_rows

HAS_ATTENTION_OVERRIDE = hasattr(comfy_attention, "wrap_attn")
# The family default: the first third of the blocks in run order, one rule for FLUX.1 and SD3. On FLUX.1 it is
# exactly the double blocks (the paper's +1.89% FLUX figure matches them). On SD3 it is a third of the joint
# blocks, not all: the subtracted term is large next to the positive text's share of joint attention (README:
# stability), so fewer steered blocks is the cautious start, and all of SD3.5-Large's blocks cost +9% of a call
# against the project's 5% target (the first third: +3%). Explicit {"double"} etc. still select by kind.
DEFAULT_JOINT_BLOCKS = frozenset({"input"})  # base.third_of: on FLUX.1 (19 double + 38 single) exactly the doubles


def steered_positions(flat_kinds, blocks, family: str = "joint-attention") -> list:
    """Indices into the model's blocks (in run order) that NASA steers: the one rule of base.chosen_positions,
    each block answering to its kind (double/single) and its third; the default is the first third."""
    n = len(flat_kinds)
    labels = [frozenset({kind, third_of(j, n)}) for j, kind in enumerate(flat_kinds)]
    default = [j for j in range(n) if third_of(j, n) in DEFAULT_JOINT_BLOCKS]
    return chosen_positions(labels, blocks, default, family)


class JointNASARun(NASARun):
    """NASARun that also keeps the current call's state on itself: the PyPI copy's dit patches receive no
    transformer_options. Each call's negative stream hangs off its NASACallState."""

    active_state = None

    def plan(self, *args, **kwargs):
        state = super().plan(*args, **kwargs)
        self.active_state = state
        return state

    def __call__(self, apply_model, args):
        try:
            return super().__call__(apply_model, args)
        finally:
            self.active_state = None

    def state_for(self, args):
        to = args.get("transformer_options")
        if to is not None and self.state_key in to:
            return to[self.state_key]
        return self.active_state


class NegativeStream:
    """The negative text stream of one denoiser call: hidden states [n, T, C] after the blocks run so far,
    the batch rows NASA steers (their alpha is the call state's), and the K/V/Q the current block made of the
    negative."""

    def __init__(self, hidden, rows, mode):
        self.hidden = hidden
        self.rows = rows          # slice or list of batch rows
        self.mode = mode
        self.txt_len = None       # text tokens in front of the image in the joint sequence
        self.q = self.k = self.v = None
        self.neg_attn = None


def _rows_index(state, batch):
    rows = state.rows
    if rows is None:
        return slice(0, batch)
    if rows == list(range(rows[0], rows[0] + len(rows))):
        return slice(rows[0], rows[0] + len(rows))
    return rows


def _take(t, rows):
    return t[rows] if t is not None else None


class JointBlockPatch:
    """One ``dit`` replace slot (``("double_block", i)`` or ``("single_block", i)``). It advances the negative
    stream through this block and, when ``apply`` is set, steers the image rows of the block's joint attention.
    Deep copies (ModelPatcher.clone) share it: nothing in it changes after creation."""

    def __init__(self, run: JointNASARun, family: "JointFamily", kind: str, index: int, block, apply: bool,
                 last: bool, previous=None):
        self.run = run
        self.family = family
        self.kind = kind
        self.index = index
        self.block = block
        self.apply = apply
        self.last = last          # the last block that needs the stream: no need to advance it past here
        self.previous = previous

    def __deepcopy__(self, memo):
        return self

    # -- the steering itself, shared by the override and the composed route
    def steer(self, attn, q, k, v, heads, skip_reshape, attend, stream):
        """attn: the joint attention output [B, L, H*D] (modified in place on the steered rows); q/k/v the joint
        call's inputs ([B, H, L, D] with skip_reshape, else [B, L, H*D]). Returns attn."""
        t = stream.txt_len
        rows = stream.rows
        seq = 2 if skip_reshape else 1
        if self.apply:
            # the image queries only (the text rows are the prompt's own update); the stream's K/V are per steered row
            attn = steer_rows(attn, q, stream.k, stream.v, heads, stream.state,
                              lambda qq, kk, vv, _heads: attend(qq, kk, vv), in_place=True, aligned=True,
                              tokens=slice(t, q.shape[seq]), seq_dim=seq, bound=self.run.settings.bound)
            stream.state.touched += 1
        if stream.mode == "full+" and not self.last:
            k_img = _take(k, rows).narrow(seq, t, k.shape[seq] - t)
            v_img = _take(v, rows).narrow(seq, t, v.shape[seq] - t)
            stream.neg_attn = attend(stream.q, torch.cat((stream.k, k_img), dim=seq),
                                     torch.cat((stream.v, v_img), dim=seq))
        elif stream.mode == "full" and not self.last:
            stream.neg_attn = attend(stream.q, stream.k, stream.v)
        return attn

    def __call__(self, args, extra):
        original = extra["original_block"]
        self.run.layer_calls += 1
        state = self.run.state_for(args)
        if state is None:
            return self.previous(args, extra) if self.previous is not None else original(args)
        stream = self.family.stream(self.run, state, args, self.kind, self.index)
        self.family.prepare(self, stream, args)
        if HAS_ATTENTION_OVERRIDE and args.get("transformer_options") is not None:
            out = self._run_with_override(args, extra, stream)
        else:
            # NASA patches chained on this route (a reference run under its main run): the outermost composes the
            # block once and every NASA patch under it adds its steering to that composition
            outer = getattr(original, "nasa_steering", ())
            if not outer:  # the block's own forward: checked once per block class
                verify_composed_route(self, args, original)
            steering = outer + ((self, stream),)

            def steer(attn, q, k, v, heads, skip_reshape, attend):
                for patch, its_stream in steering:
                    attn = patch.steer(attn, q, k, v, heads, skip_reshape, attend, its_stream)
                return attn

            def block_fn(a):
                return self.family.composed(self, a, steer)
            block_fn.nasa_steering = steering
            out = self.previous(args, {**extra, "original_block": block_fn}) if self.previous is not None \
                else block_fn(args)
        if not self.last:
            self.family.advance(self, stream)
        stream.q = stream.k = stream.v = stream.neg_attn = None
        return out

    def _run_with_override(self, args, extra, stream):
        to = dict(args["transformer_options"])
        previous_override = to.get("optimized_attention_override")
        expected = self.family.joint_length(self, args)
        armed = [True]

        def override(func, *a, **kw):
            out = previous_override(func, *a, **kw) if previous_override is not None else func(*a, **kw)
            q, k, v = a[:3]
            skip = bool(kw.get("skip_reshape", False))
            if not armed[0] or q.shape[2 if skip else 1] != expected or out.dim() != 3:
                return out
            armed[0] = False  # the block's joint call is its first; MMDiT-X's image self-attention follows
            heads = a[3] if len(a) > 3 else kw["heads"]
            neg_kw = override_call_options(kw)

            def attend(qq, kk, vv):
                if previous_override is not None:
                    return previous_override(func, qq, kk, vv, heads, **neg_kw)
                return func(qq, kk, vv, heads, **neg_kw)

            return self.steer(out, q, k, v, heads, skip, attend, stream)

        to["optimized_attention_override"] = override
        args = {**args, "transformer_options": to}
        out = self.previous(args, extra) if self.previous is not None else extra["original_block"](args)
        if armed[0]:
            raise NASAInputError(f"NASA: {self.family.name} {self.kind} block {self.index} made no joint attention "
                                 f"call over {expected} tokens; this ComfyUI's block is not the one NASA knows")
        return out


def _attend_comfy(heads, skip_reshape, mask=None):
    def attend(q, k, v):
        if mask is None:
            return comfy_attention.optimized_attention(q, k, v, heads, skip_reshape=skip_reshape)
        return comfy_attention.optimized_attention(q, k, v, heads, skip_reshape=skip_reshape, mask=mask)
    return attend


def _no_steering(attn, *_):
    return attn


# (block class, kind) -> True once the composed route reproduced that block's own forward bit for bit
_COMPOSED_VERIFIED: dict = {}


def verify_composed_route(patch: "JointBlockPatch", args: dict, original_block) -> None:
    """Where ComfyUI has no attention override the block is composed from its submodules (``composed``), a copy of
    the block's order of operations that ComfyUI does not maintain. Before the first use per block class in this
    process, run the block's own forward and the composed route without steering on the same inputs and require
    equal bits; otherwise refuse rather than guess (one extra block forward, once)."""
    if args["img"].is_meta:  # FLOP counting (benchmarks): no values to compare, and the check's forward would count
        return
    key = (type(patch.block), patch.kind)
    verdict = _COMPOSED_VERIFIED.get(key)
    if verdict is None:
        def copy(a):  # some releases' blocks update txt in place (txt += ...)
            return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in a.items()}
        with torch.no_grad():
            own = original_block(copy(args))
            ours = patch.family.composed(patch, copy(args), _no_steering)
        verdict = _COMPOSED_VERIFIED[key] = all(
            (own[name] is None and ours.get(name) is None) or
            (ours.get(name) is not None and own[name].shape == ours[name].shape and torch.equal(own[name], ours[name]))
            for name in own)
    if not verdict:
        from .comfy_runtime import comfy_release
        raise NASAInputError(
            f"NASA: this ComfyUI ({comfy_release()}) has no attention override, and its {patch.family.name} "
            f"{patch.kind} block ({type(patch.block).__name__}) does not compute what NASA's composed route computes, "
            "so NASA refuses instead of guessing. Update ComfyUI to v0.3.60 or later (attention override), where NASA "
            "runs the block's own forward.")


# ---------------------------------------------------------------------------------------------------------------
# The families


class JointFamily:
    name = "joint"

    def embed(self, dm, negative):
        raise NotImplementedError

    def stream(self, run, state, args, kind, index):
        """The call's negative stream; made (the negative embedded) at the first block that runs."""
        stream = getattr(state, "_nasa_joint_stream", None)
        if stream is None:
            img = args["img"]
            rows = _rows_index(state, img.shape[0])
            neg = state.negative.to(device=img.device, dtype=img.dtype)
            n = len(range(img.shape[0])[rows]) if isinstance(rows, slice) else len(rows)
            if state.neg_rows is not None:
                neg = neg[state.neg_rows]
            elif neg.shape[0] != n:
                neg = neg.expand(n, *neg.shape[1:])
            stream = NegativeStream(self.embed(run.diffusion_model, neg), rows, run.settings.negative_stream)
            stream.embedded = stream.hidden
            stream.state = state
            state._nasa_joint_stream = stream
        return stream


def _heads_split(qkv, heads):
    b, n, _ = qkv.shape
    return qkv.view(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)


class FluxFamily(JointFamily):
    name = "FLUX"

    def embed(self, dm, negative):
        if getattr(dm, "txt_norm", None) is not None:
            negative = dm.txt_norm(negative)
        return dm.txt_in(negative)

    def joint_length(self, patch, args):
        if patch.kind == "double":
            return args["txt"].shape[1] + args["img"].shape[1]
        return args["img"].shape[1]

    @staticmethod
    def _rope_text(q, k, pe):
        """FLUX.1 gives every text token position 0 (txt_ids are zeros): one pe row serves all negative tokens."""
        from comfy.ldm.flux.math import apply_rope
        if pe is None:
            return q, k
        return apply_rope(q, k, pe[:1, :, :1].expand(q.shape[0], -1, q.shape[2], *pe.shape[3:]))

    def prepare(self, patch, stream, args):
        """The negative's Q/K/V in this block (after QK-norm and RoPE), from the block's own text branch."""
        block = patch.block
        vec = _take(args["vec"], stream.rows)
        h = stream.embedded if stream.mode == "kv" else stream.hidden
        heads = block.num_heads
        if patch.kind == "double":
            stream.txt_len = args["txt"].shape[1]
            mod1, mod2 = block.txt_mod(vec)
            x = (1 + mod1.scale) * block.txt_norm1(h) + mod1.shift
            q, k, v = _heads_split(block.txt_attn.qkv(x), heads)
            q, k = block.txt_attn.norm(q, k, v)
            stream.mods = (mod1, mod2)
        else:
            mod, _ = block.modulation(vec)
            x = (1 + mod.scale) * block.pre_norm(h) + mod.shift
            first = getattr(block, "mlp_hidden_dim_first", block.mlp_hidden_dim)
            qkv, mlp = torch.split(block.linear1(x), [3 * block.hidden_size, first], dim=-1)
            q, k, v = _heads_split(qkv, heads)
            q, k = block.norm(q, k, v)
            stream.mods = (mod, mlp)
        stream.q, stream.k = self._rope_text(q, k, args.get("pe"))
        stream.v = v

    def advance(self, patch, stream):
        if stream.mode == "kv":
            return
        block = patch.block
        attn = stream.neg_attn
        h = stream.hidden
        if patch.kind == "double":
            mod1, mod2 = stream.mods
            h = h + mod1.gate * block.txt_attn.proj(attn)
            h = h + mod2.gate * block.txt_mlp((1 + mod2.scale) * block.txt_norm2(h) + mod2.shift)
        else:
            mod, mlp = stream.mods
            h = h + mod.gate * block.linear2(torch.cat((attn, block.mlp_act(mlp)), 2))
        stream.hidden = h

    def composed(self, patch, args, steer):
        """The block from its own submodules, for ComfyUI without an attention override (see module doc), with
        the functions its forward calls where this release has them (``apply_mod``); checked against the block's
        own forward by ``verify_composed_route`` before first use."""
        import comfy.ldm.flux.layers as flux_layers
        from comfy.ldm.flux.math import apply_rope
        own_apply_mod = getattr(flux_layers, "apply_mod", None)

        def mod(x, mult, add=None):
            if own_apply_mod is not None:
                return own_apply_mod(x, mult, add)
            return mult * x + add if add is not None else mult * x

        block = patch.block
        vec, pe = args["vec"], args["pe"]
        heads = block.num_heads
        attend = _attend_comfy(heads, True)
        joint_attend = _attend_comfy(heads, True, args.get("attn_mask"))
        if patch.kind == "double":
            img, txt = args["img"], args["txt"]
            img_mod1, img_mod2 = block.img_mod(vec)
            txt_mod1, txt_mod2 = block.txt_mod(vec)
            img_q, img_k, img_v = _heads_split(block.img_attn.qkv(mod(block.img_norm1(img), 1 + img_mod1.scale,
                                                                      img_mod1.shift)), heads)
            img_q, img_k = block.img_attn.norm(img_q, img_k, img_v)
            txt_q, txt_k, txt_v = _heads_split(block.txt_attn.qkv(mod(block.txt_norm1(txt), 1 + txt_mod1.scale,
                                                                      txt_mod1.shift)), heads)
            txt_q, txt_k = block.txt_attn.norm(txt_q, txt_k, txt_v)
            q, k = apply_rope(torch.cat((txt_q, img_q), dim=2), torch.cat((txt_k, img_k), dim=2), pe)
            v = torch.cat((txt_v, img_v), dim=2)
            attn = steer(joint_attend(q, k, v), q, k, v, heads, True, attend)
            txt_attn, img_attn = attn[:, :txt.shape[1]], attn[:, txt.shape[1]:]
            img = img + mod(block.img_attn.proj(img_attn), img_mod1.gate)
            img = img + mod(block.img_mlp(mod(block.img_norm2(img), 1 + img_mod2.scale, img_mod2.shift)), img_mod2.gate)
            txt = txt + mod(block.txt_attn.proj(txt_attn), txt_mod1.gate)
            txt = txt + mod(block.txt_mlp(mod(block.txt_norm2(txt), 1 + txt_mod2.scale, txt_mod2.shift)), txt_mod2.gate)
            if txt.dtype == torch.float16:
                txt = torch.nan_to_num(txt, nan=0.0, posinf=65504, neginf=-65504)
            return {"img": img, "txt": txt}
        x = args["img"]
        mod_s, _ = block.modulation(vec)
        qkv, mlp = torch.split(block.linear1(mod(block.pre_norm(x), 1 + mod_s.scale, mod_s.shift)),
                               [3 * block.hidden_size, block.mlp_hidden_dim], dim=-1)
        q, k, v = _heads_split(qkv, heads)
        q, k = block.norm(q, k, v)
        q, k = apply_rope(q, k, pe)
        attn = steer(joint_attend(q, k, v), q, k, v, heads, True, attend)
        x = x + mod(block.linear2(torch.cat((attn, block.mlp_act(mlp)), 2)), mod_s.gate)
        if x.dtype == torch.float16:
            x = torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504)
        return {"img": x}


class SD3Family(JointFamily):
    name = "SD3"

    def embed(self, dm, negative):
        if getattr(dm, "context_processor", None) is not None:
            negative = dm.context_processor(negative)
        h = dm.context_embedder(negative)
        if getattr(dm, "register_length", 0) > 0:
            h = torch.cat((dm.register.to(h).expand(h.shape[0], -1, -1), h), 1)
        return h

    def joint_length(self, patch, args):
        return args["txt"].shape[1] + args["img"].shape[1]

    def prepare(self, patch, stream, args):
        cb = patch.block.context_block
        stream.txt_len = args["txt"].shape[1]
        c = _take(args["vec"], stream.rows)
        h = stream.embedded if stream.mode == "kv" else stream.hidden
        (stream.q, stream.k, stream.v), stream.mods = cb.pre_attention(h, c)

    def advance(self, patch, stream):
        cb = patch.block.context_block
        if stream.mode == "kv" or cb.pre_only:
            return
        stream.hidden = cb.post_attention(stream.neg_attn, *stream.mods)

    def composed(self, patch, args, steer):
        """JointBlock's mixing from its public pre_attention/post_attention, for ComfyUI without an override."""
        cb, xb = patch.block.context_block, patch.block.x_block
        context, x, c = args["txt"], args["img"], args["vec"]
        heads = xb.attn.num_heads
        attend = _attend_comfy(heads, False)
        context_qkv, context_inter = cb.pre_attention(context, c)
        if xb.x_block_self_attn:
            x_qkv, x_qkv2, x_inter = xb.pre_attention_x(x, c)
        else:
            x_qkv, x_inter = xb.pre_attention(x, c)
        q, k, v = (torch.cat((context_qkv[t], x_qkv[t]), dim=1) for t in range(3))
        attn = steer(attend(q, k, v), q, k, v, heads, False, attend)
        n = context_qkv[0].shape[1]
        context_attn, x_attn = attn[:, :n], attn[:, n:]
        context = None if cb.pre_only else cb.post_attention(context_attn, *context_inter)
        if xb.x_block_self_attn:
            attn2 = _attend_comfy(xb.attn2.num_heads, False)(*x_qkv2)
            x = xb.post_attention_x(x_attn, attn2, *x_inter)
        else:
            x = xb.post_attention(x_attn, *x_inter)
        return {"txt": context, "img": x}


# ---------------------------------------------------------------------------------------------------------------
# The adapters


def install_joint_blocks(model_patcher, run: JointNASARun, block_lists, blocks, family: str, place) -> int:
    """The install of every joint-attention adapter (this one and ``joint_rows``): a patch at each block in run
    order up to the last steered one, since the negative's stream must run through every block before it and none
    after. ``block_lists(dm)``: [(kind, [blocks])] in run order; ``place(kind, index, block, apply, last)``: (slot
    kind, key, make) of that block's patch for ``comfy_runtime.install_patch``. Returns how many blocks steer."""
    dm = model_patcher.model.diffusion_model
    run.diffusion_model = dm
    flat = [(kind, i, block) for kind, kind_blocks in block_lists(dm) for i, block in enumerate(kind_blocks)]
    steered = steered_positions([kind for kind, _, _ in flat], blocks, family)
    if not steered:
        return 0
    last = steered[-1]
    for j, (kind, i, block) in enumerate(flat[:last + 1]):
        install_patch(model_patcher, run, *place(kind, i, block, j in steered, j == last))
    install_wrapper(model_patcher, run)
    return len(steered)


class _JointAdapter(NASAAdapter):
    run_class = JointNASARun
    joint: JointFamily

    def block_lists(self, dm):
        """[(kind, [blocks])] in the order the model runs them."""
        raise NotImplementedError

    def install(self, model_patcher, settings: NASASettings, run: JointNASARun) -> int:
        def place(kind, index, block, apply, last):
            return "dit", (f"{kind}_block", index), \
                lambda _, previous: JointBlockPatch(run, self.joint, kind, index, block, apply, last, previous)
        return install_joint_blocks(model_patcher, run, self.block_lists, settings.blocks, self.family, place)


class FluxAdapter(_JointAdapter):
    family = "FLUX.1 (schnell / dev)"
    joint = FluxFamily()

    def matches(self, model_patcher) -> bool:
        from comfy.ldm.flux.model import Flux
        dm = model_patcher.model.diffusion_model
        if not isinstance(dm, Flux):
            return False
        params = dm.params
        # FLUX.2-style variants (global modulation, positional text ids, gated MLPs) are not FLUX.1
        return not (getattr(params, "global_modulation", False) or getattr(params, "txt_ids_dims", None)
                    or getattr(params, "yak_mlp", False) or getattr(params, "mlp_silu_act", False))

    def context_width(self, model_patcher) -> int:
        return model_patcher.model.diffusion_model.txt_in.in_features

    def block_lists(self, dm):
        return [("double", list(dm.double_blocks)), ("single", list(dm.single_blocks))]


class SD3Adapter(_JointAdapter):
    family = "SD3 / SD3.5 (MMDiT)"
    joint = SD3Family()

    def matches(self, model_patcher) -> bool:
        from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT
        dm = model_patcher.model.diffusion_model
        return isinstance(dm, MMDiT) and getattr(dm, "context_embedder", None) is not None

    def context_width(self, model_patcher) -> int:
        return model_patcher.model.diffusion_model.context_embedder.in_features

    def block_lists(self, dm):
        return [("double", list(dm.joint_blocks))]
