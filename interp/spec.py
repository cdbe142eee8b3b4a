"""ModelSpec: the knobs of a model, and the HookedTransformer (or real-valued wrapper) they build.

Token tasks (modular arithmetic) get a plain ``HookedTransformer``. Real-valued tasks get
``RegressionTransformer``: a thin ``HookedRootModule`` with a hooked read-in ``Linear`` in place of the
token embedding and a linear read-out in place of the unembedding. Its blocks, positional embedding
and final norm are TransformerLens's own modules, so every standard hook name works unchanged.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Literal, Union

import torch
from torch import Tensor, nn
from transformer_lens import ActivationCache, HookedTransformer, HookedTransformerConfig
from transformer_lens import HookedRootModule
from transformer_lens.components import Unembed
from transformer_lens.hook_points import HookPoint

from .cheng import CHENG_LAYER, LAYERS, check_spec, install_fused_training, restrict
from .fast import install_fast_path
from .scoring import EXP_CAP, head_scorings, install_context_mask, install_scoring
from .tasks import RegressionTask, TaskBase
from .validation import NON_NEGATIVE_INT, POSITIVE_INT, POSITIVE_REAL, Options, validate

Normalization = Literal["LN", "LNPre", "RMS", "none"]
Positional = Literal["learned", "rotary", "none"]
Mask = Literal["causal", "context"]
NORMALIZATIONS = ("LN", "LNPre", "RMS", "none")
POSITIONALS = ("learned", "rotary", "none")
MASKS = ("causal", "context")
INITS = ("tl", "he2024")
ACT_FNS = ("gelu", "relu", "silu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "solu_ln")  # TransformerLens's
# every field's type and range, checked once where a spec is built (the API, the CLI, run configs, checkpoints)
SPEC_CONSTRAINTS = {
    "n_layers": POSITIVE_INT, "n_heads": POSITIVE_INT, "d_model": POSITIVE_INT, "d_mlp": [None, *POSITIVE_INT],
    "attn_only": [bool], "normalization": [Options(NORMALIZATIONS)], "positional": [Options(POSITIONALS)],
    "scoring": [str], "mask": [Options(MASKS)], "act_fn": [Options(ACT_FNS)], "n_ctx": POSITIVE_INT,
    "d_vocab": [None, *POSITIVE_INT], "d_in": [None, *POSITIVE_INT], "d_out": POSITIVE_INT, "seed": NON_NEGATIVE_INT,
    "tied_embed": [bool], "bias": [bool], "init": [Options(INITS)], "layer": [Options(LAYERS)], "final_norm": [bool],
    "exp_cap": [None, *POSITIVE_REAL, Options((math.inf,))],  # inf: no cap
}


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of one model. Give ``d_vocab`` for a token model, or ``d_in``/``d_out`` for a real-valued one.

    He et al.'s model (their models.py) is ``positional="rotary", act_fn="relu", normalization="LN",
    tied_embed=True, bias=False, init="he2024"``. What still differs in TransformerLens: its rotary embedding
    rotates the two halves of a head (GPT-NeoX) where theirs (rotary_embedding_torch) rotates adjacent pairs, a
    fixed permutation of the query/key coordinates that W_Q and W_K absorb, so the function class and (with i.i.d.
    init and Adam) the training are the same in distribution; Q, K and V are three matrices, not one fused
    ``to_qkv`` (the same entries, the same N(0, 0.02)); their vocabulary also holds the tokenizer's unused special
    tokens, ours only the p residues; they train in bfloat16 mixed precision, we in float32."""

    n_layers: int = 2
    n_heads: int = 2
    d_model: int = 64
    d_mlp: int | None = None  # default 4 * d_model
    attn_only: bool = False
    normalization: Normalization = "LN"
    positional: Positional = "learned"
    scoring: str = "softmax"
    mask: Mask = "causal"  # "context": bidirectional, no position attends to the query (Cheng et al.'s M)
    act_fn: str = "gelu"
    n_ctx: int = 128
    d_vocab: int | None = None
    d_in: int | None = None
    d_out: int = 1
    seed: int = 0
    tied_embed: bool = False  # the unembedding is embed.W_E.T (He et al.'s weight tying); token models only
    bias: bool = True  # False: every linear bias (b_Q, b_K, b_V, b_O, b_in, b_out, b_U) fixed at 0; LN keeps its b
    init: str = "tl"  # "tl": TransformerLens's N(0, 0.8/√d_model); "he2024": He et al.'s, see init_he2024
    layer: str = "standard"  # "cheng2024": Cheng et al.'s restricted attention layer (interp.cheng)
    final_norm: bool = True  # False: no final layer norm before the read-out (the blocks keep theirs)
    exp_cap: float | None = None  # exp scoring is exp(min(s, exp_cap)); None: EXP_CAP (10) in the standard
    # layer, no cap in "cheng2024" (as in Cheng et al.'s code)

    def __post_init__(self) -> None:
        validate(self, SPEC_CONSTRAINTS)
        head_scorings(self.scoring, self.n_heads)  # raises ValueError naming scoring
        if self.layer == CHENG_LAYER:
            check_spec(self)
            if self.init != "tl":
                raise ValueError(f"layer {CHENG_LAYER!r} draws its own init (N(0, 0.1) on the free entries); "
                                 f"init must stay 'tl', got {self.init!r}")
        elif self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if (self.d_vocab is None) == (self.d_in is None):
            raise ValueError("give exactly one of d_vocab (token model) or d_in (real-valued model)")
        if not self.final_norm and self.d_vocab is not None:
            raise ValueError("final_norm=False needs a real-valued model (d_in); a token model keeps TransformerLens's ln_final")
        if self.tied_embed and self.d_vocab is None:
            raise ValueError("tied_embed needs a token model (d_vocab): a real-valued read-in and read-out have "
                             "different widths")

    @classmethod
    def for_task(cls, task: TaskBase, n_examples: int, **knobs: Any) -> "ModelSpec":
        """A spec whose input/output widths and context length fit ``task`` with ``n_examples`` examples."""
        if knobs.get("mask") == "context" and getattr(task, "layout", None) != "paired":
            raise ValueError("mask 'context' lets every position see every example, so it needs a task with "
                             "layout 'paired' (one query, last)")
        io: dict[str, Any] = {"n_ctx": task.n_ctx(n_examples)}  # type: ignore[attr-defined]
        if isinstance(task, RegressionTask):
            io |= {"d_in": task.d_in, "d_out": task.d_out}
        else:
            io["d_vocab"] = task.d_vocab  # type: ignore[attr-defined]
        return cls(**io, **knobs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def scoring_exp_cap(self) -> float | None:
        """The cap exp scoring uses: ``exp_cap``, or by default EXP_CAP in the standard layer and none in Cheng's."""
        if self.exp_cap is not None:
            return self.exp_cap
        return None if self.layer == CHENG_LAYER else EXP_CAP

    def config(self) -> HookedTransformerConfig:
        """The TransformerLens config for the backbone."""
        return HookedTransformerConfig(
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            d_model=self.d_model,
            d_head=self.d_model if self.layer == CHENG_LAYER else self.d_model // self.n_heads,
            use_attn_scale=self.layer != CHENG_LAYER,
            d_mlp=None if self.attn_only else (self.d_mlp or 4 * self.d_model),
            attn_only=self.attn_only,
            act_fn=self.act_fn,
            n_ctx=self.n_ctx,
            d_vocab=self.d_vocab or 1,
            normalization_type=None if self.normalization == "none" else self.normalization,
            positional_embedding_type="rotary" if self.positional == "rotary" else "standard",
            rotary_dim=self.d_model // self.n_heads if self.positional == "rotary" else None,
            seed=self.seed,
            attention_dir="bidirectional" if self.mask == "context" else "causal",
            default_prepend_bos=False,
            device="cpu",
        )

    def build(self) -> "Model":
        """A freshly initialised model (seeded by ``seed``) on the CPU."""
        torch.manual_seed(self.seed)
        with warnings.catch_warnings():
            # we pin transformer-lens < 4 on purpose: HookedTransformer is the model class we serve
            warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)
            backbone = HookedTransformer(self.config(), move_to_device=False)
        model: Model = backbone if self.d_vocab is not None else RegressionTransformer(
            backbone, self.d_in, self.d_out, final_norm=self.final_norm)  # type: ignore[arg-type]
        if self.positional == "none" and hasattr(model, "pos_embed"):
            model.pos_embed.W_pos.data.zero_()
            model.pos_embed.W_pos.requires_grad_(False)
        if self.tied_embed:
            tie_unembed(model)  # type: ignore[arg-type]
        if self.init == "he2024":
            init_he2024(model, n_layers=self.n_layers, d_model=self.d_model, seed=self.seed)
        if not self.bias:
            freeze_biases_at_zero(model)
        if self.layer == CHENG_LAYER:
            restrict(model, d_x=self.d_in - self.d_out, seed=self.seed)  # type: ignore[operator]
        install_scoring(model, self.scoring, exp_cap=self.scoring_exp_cap, softmax_over_n=self.layer == CHENG_LAYER)
        if self.mask == "context":
            install_context_mask(model)
        install_fast_path(model)  # fused in training mode while no hook is attached (interp.fast)
        if self.layer == CHENG_LAYER:
            install_fused_training(model, head_scorings(self.scoring, self.n_heads), self.scoring_exp_cap)
        return model.eval()  # TransformerLens's arithmetic bit for bit until someone calls .train()


class TiedUnembed(Unembed):
    """TransformerLens's Unembed with no W_U of its own: ``W_U`` is ``embed.W_E.T`` [d_model, d_vocab], the same
    storage, so both uses train W_E and the state dict holds it once (as ``embed.W_E``). The embedding is kept
    in a tuple so that it is not registered a second time as a submodule; forward, ``hook_in``/``hook_out``,
    ``model.W_U`` and everything that reads ``model.unembed.W_U`` work as before."""

    def __init__(self, embed: nn.Module, b_U: nn.Parameter, cfg: HookedTransformerConfig):
        nn.Module.__init__(self)
        self.cfg = cfg
        self.b_U = b_U
        self.hook_in = HookPoint()  # [batch, pos, d_model]
        self.hook_out = HookPoint()  # [batch, pos, d_vocab]
        self._tied_to = (embed,)

    @property
    def W_U(self) -> Tensor:  # type: ignore[override]
        """[d_model, d_vocab]: the transposed token embedding."""
        return self._tied_to[0].W_E.T


def tie_unembed(model: HookedTransformer) -> None:
    """Replace ``model.unembed`` by a TiedUnembed reading ``model.embed`` (in place; b_U is kept)."""
    model.unembed = TiedUnembed(model.embed, model.unembed.b_U, model.cfg)
    model.setup()  # register the new hook points under their names


def is_linear_bias(name: str) -> bool:
    """Whether the parameter ``name`` is a linear layer's bias: TransformerLens's b_Q, b_K, b_V, b_O, b_in, b_out,
    b_U (not a layer norm's ``b``) or a torch Linear's ``bias``."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf.startswith("b_") or leaf == "bias"


@torch.no_grad()
def init_he2024(model: Model, *, n_layers: int, d_model: int, seed: int) -> None:
    """He et al.'s init (models.py, RoPETransformer.__init__), in place: N(0, 0.02) for every weight matrix
    (W_E, W_pos, W_Q, W_K, W_V, W_O, W_in, W_out, W_U, torch Linear weights), then W_out ÷ √(2·n_layers) (their
    MLP ``c_proj``, the only module whose name holds 'proj'; the attention output ``o`` is not scaled) and an
    untied read-out ÷ √d_model (their ``lm_head``, 'head'; tied, lm_head *is* wte, so W_U = W_E.T keeps 0.02).
    Linear biases are zeroed; layer norms stay w = 1, b = 0."""
    g = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if not param.requires_grad:  # a frozen W_pos (positional "none") stays zero
            continue
        if leaf.startswith("W_") or leaf == "weight":
            param.normal_(0.0, 0.02, generator=g)
            if leaf == "W_out":
                param /= math.sqrt(2 * n_layers)
            if name.startswith("unembed."):
                param /= math.sqrt(d_model)
        elif is_linear_bias(name):
            param.zero_()


@torch.no_grad()
def freeze_biases_at_zero(model: Model) -> None:
    """``bias=False``, in place: every linear bias is 0 and untrained (requires_grad False), which computes
    exactly what a model without them does; layer-norm biases stay trainable, as in He et al.'s model."""
    for name, param in model.named_parameters():
        if is_linear_bias(name):
            param.zero_()
            param.requires_grad_(False)


def to_device(model: Model, device: torch.device | str) -> Model:
    """Move ``model`` to ``device`` quietly (HookedTransformer.to prints) and keep ``cfg.device`` in step."""
    nn.Module.to(model, device)
    model.cfg.device = str(device)
    return model


class ReadIn(nn.Module):
    """Real-valued tokens into the residual stream: [batch, pos, d_in] -> [batch, pos, d_model]."""

    def __init__(self, d_in: int, d_model: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


class ReadOut(nn.Module):
    """Residual stream to predictions: [batch, pos, d_model] -> [batch, pos, d_out]."""

    def __init__(self, d_model: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_model, d_out)

    @property
    def W_U(self) -> Tensor:
        """[d_model, d_out], laid out like TransformerLens's unembedding."""
        return self.linear.weight.T

    @property
    def b_U(self) -> Tensor:
        return self.linear.bias

    def forward(self, resid: Tensor) -> Tensor:
        return self.linear(resid)


class RegressionTransformer(HookedRootModule):
    """A HookedTransformer's blocks behind a hooked real-valued read-in and a linear read-out.

    forward(x: [batch, pos, d_in]) -> [batch, pos, d_out]. Like HookedTransformer.forward it takes
    ``start_at_layer`` (then ``x`` is resid_pre of that layer, [batch, pos, d_model]) and
    ``stop_at_layer`` (then it returns that layer's resid_pre)."""

    def __init__(self, backbone: HookedTransformer, d_in: int, d_out: int, final_norm: bool = True):
        super().__init__()
        self.cfg = backbone.cfg
        self.embed = ReadIn(d_in, self.cfg.d_model)
        self.hook_embed = HookPoint()  # [batch, pos, d_model]
        if self.cfg.positional_embedding_type != "rotary":
            self.pos_embed = backbone.pos_embed
            self.hook_pos_embed = HookPoint()  # [batch, pos, d_model]
        self.blocks = backbone.blocks
        if self.cfg.normalization_type is not None and final_norm:
            self.ln_final = backbone.ln_final
        self.unembed = ReadOut(self.cfg.d_model, d_out)
        self.setup()

    def forward(self, x: Tensor, start_at_layer: int | None = None, stop_at_layer: int | None = None) -> Tensor:
        if start_at_layer is None:
            resid = self.hook_embed(self.embed(x))
            if hasattr(self, "pos_embed"):
                positions = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
                resid = resid + self.hook_pos_embed(self.pos_embed(positions))
            start_at_layer = 0
        else:
            resid = x
        for block in self.blocks[start_at_layer:stop_at_layer]:
            resid = block(resid)
        if stop_at_layer is not None:
            return resid
        if hasattr(self, "ln_final"):
            resid = self.ln_final(resid)
        return self.unembed(resid)

    def run_with_cache(self, *args: Any, return_cache_object: bool = True, remove_batch_dim: bool = False, **kwargs: Any):  # type: ignore[override]
        """As HookedTransformer.run_with_cache: returns (predictions, ActivationCache)."""
        out, cache_dict = super().run_with_cache(*args, remove_batch_dim=remove_batch_dim, **kwargs)
        if return_cache_object:
            return out, ActivationCache(cache_dict, self, has_batch_dim=not remove_batch_dim)
        return out, cache_dict


Model = Union[HookedTransformer, RegressionTransformer]


def check_layer(model: Model, layer: int | None) -> int | None:
    """``layer`` as an int (None, "every layer", passes through), or a one-line ValueError naming the model's range
    when it has no such block: the one layer check of every probe."""
    n_layers = model.cfg.n_layers
    if layer is None:
        return None
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral) or not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer!r} does not exist: the model has {n_layers} layers (0-{n_layers - 1})")
    return int(layer)
