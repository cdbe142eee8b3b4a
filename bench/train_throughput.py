"""Training throughput: our stack against a plain-PyTorch reference of the same shape, timed side by side.

    python bench/train_throughput.py [--task modular|linear] [--steps N] [--threads T] [--device cpu|cuda] [--profile]

(a) ours: ``ModelSpec.for_task(...).build()`` (a TransformerLens HookedTransformer, or our
    RegressionTransformer for real-valued tasks), trained with ``interp.train.train_step`` and ``make_optimizer``.
(b) reference: a nanoGPT-style model with the same widths, pre-LN blocks, final LN, learned positions,
    untied unembedding, the same activation and TransformerLens's biases, whose attention is
    ``F.scaled_dot_product_attention(is_causal=True)``. Its weights are copied from (a), and the script checks
    that both compute the same outputs and have the same parameter count, so the two differ only in how
    the same function is computed.

Over 400 lines on purpose: the reference model, its weight copy and the ablation ladder sit beside the timing
loop, so that what the ratio compares reads in one file.

Both train with the very same ``train_step`` (AdamW from ``make_optimizer``, gradient clipping, the same
loss) on the same pre-sampled batches; sampling is outside the timed region. After a warm-up, the two are
timed in alternating blocks of steps (ours, ref, ref, ours, ...), so that load from other processes hits
both alike; tokens/s (all input tokens, batch x pos) is the median over blocks.

``--profile`` then explains the gap: forward / backward / optimizer split, forward + backward of each
piece of a block, an ablation ladder that swaps TransformerLens pieces for fused ops, the fixed per-step
cost at batch size 1, HookPoint overhead, and the top aten ops of each model.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from transformer_lens import HookedTransformerConfig
from transformer_lens.components import Attention, LayerNorm, TransformerBlock
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

from interp.fast import remove_fast_path
from interp.spec import ModelSpec, RegressionTransformer
from interp.tasks import Batch, LinearTask, ModularTask, TaskBase
from interp.train import TrainConfig, loss_fn, make_optimizer, train_step


# --------------------------------------------------------------------------------------------- config

@dataclass(frozen=True)
class BenchConfig:
    """What is trained and how it is timed."""

    task: str = "modular"
    n_examples: int | None = None  # default: 32 for modular (95 tokens), 40 for linear (80 tokens)
    batch_size: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 128
    d_mlp: int = 512
    act_fn: str = "relu"
    steps: int = 6  # timed steps per block
    repeats: int = 5  # timed blocks per model
    warmup: int = 3  # untimed steps per model before the first block
    n_batches: int = 8  # distinct pre-sampled batches, cycled
    threads: int | None = None
    device: str = "auto"
    seed: int = 0


def make_task(name: str) -> tuple[TaskBase, int]:
    """The benchmark task and its default number of in-context examples."""
    if name == "modular":
        return ModularTask(p=29), 32
    if name == "linear":
        return LinearTask(d_x=5), 40
    raise ValueError(f"task must be 'modular' or 'linear', got {name!r}")


# ------------------------------------------------------------------------------------ reference model

class RefAttention(nn.Module):
    """Causal multi-head attention on SDPA: [batch, pos, d_model] -> [batch, pos, d_model]."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)  # = W_Q, W_K, W_V and b_Q, b_K, b_V stacked
        self.out = nn.Linear(d_model, d_model)  # = W_O, b_O

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = rearrange(self.qkv(x), "b p (three h d) -> three b h p d", three=3, h=self.n_heads)
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(rearrange(z, "b h p d -> b p (h d)"))


class RefBlock(nn.Module):
    """Pre-LN block: resid + attn(ln1(resid)), then + mlp(ln2(resid))."""

    def __init__(self, cfg: HookedTransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.attn = RefAttention(cfg.d_model, cfg.n_heads)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.mlp_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.act = SUPPORTED_ACTIVATIONS[cfg.act_fn]
        self.mlp_out = nn.Linear(cfg.d_mlp, cfg.d_model)

    def forward(self, resid: Tensor) -> Tensor:
        resid = resid + self.attn(self.ln1(resid))
        return resid + self.mlp_out(self.act(self.mlp_in(self.ln2(resid))))


class RefGPT(nn.Module):
    """nanoGPT-style transformer. Token model: [batch, pos] long -> [batch, pos, d_vocab] logits; with
    ``d_in``: [batch, pos, d_in] -> [batch, pos, d_out] through a Linear read-in and read-out."""

    def __init__(self, cfg: HookedTransformerConfig, d_in: int | None = None, d_out: int | None = None):
        super().__init__()
        if cfg.normalization_type != "LN" or cfg.positional_embedding_type != "standard" or cfg.attn_only:
            raise ValueError("the reference model covers LN, learned positions and MLP blocks only")
        self.embed = nn.Linear(d_in, cfg.d_model) if d_in is not None else nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.pos = nn.Parameter(torch.zeros(cfg.n_ctx, cfg.d_model))
        self.blocks = nn.ModuleList(RefBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.unembed = nn.Linear(cfg.d_model, d_out if d_in is not None else cfg.d_vocab)

    def forward(self, x: Tensor) -> Tensor:
        resid = self.embed(x) + self.pos[: x.shape[1]]
        for block in self.blocks:
            resid = block(resid)
        return self.unembed(self.ln_final(resid))


@torch.no_grad()
def reference_like(model: nn.Module) -> RefGPT:
    """A RefGPT holding ``model``'s weights (so both compute the same function)."""
    cfg: HookedTransformerConfig = model.cfg  # type: ignore[assignment]
    regression = isinstance(model, RegressionTransformer)
    ref = RefGPT(cfg, *((model.embed.linear.in_features, model.unembed.linear.out_features) if regression else ()))
    if regression:
        ref.embed.load_state_dict(model.embed.linear.state_dict())
        ref.unembed.load_state_dict(model.unembed.linear.state_dict())
    else:
        ref.embed.weight.copy_(model.embed.W_E)
        ref.unembed.weight.copy_(model.unembed.W_U.T)
        ref.unembed.bias.copy_(model.unembed.b_U)
    ref.pos.copy_(model.pos_embed.W_pos)
    for mine, theirs in zip(ref.blocks, model.blocks):
        a = theirs.attn
        mine.attn.qkv.weight.copy_(rearrange([a.W_Q, a.W_K, a.W_V], "three h m d -> (three h d) m"))
        mine.attn.qkv.bias.copy_(rearrange([a.b_Q, a.b_K, a.b_V], "three h d -> (three h d)"))
        mine.attn.out.weight.copy_(rearrange(a.W_O, "h d m -> m (h d)"))
        mine.attn.out.bias.copy_(a.b_O)
        mine.mlp_in.weight.copy_(theirs.mlp.W_in.T)
        mine.mlp_in.bias.copy_(theirs.mlp.b_in)
        mine.mlp_out.weight.copy_(theirs.mlp.W_out.T)
        mine.mlp_out.bias.copy_(theirs.mlp.b_out)
        for ln_ref, ln_tl in ((mine.ln1, theirs.ln1), (mine.ln2, theirs.ln2)):
            ln_ref.weight.copy_(ln_tl.w)
            ln_ref.bias.copy_(ln_tl.b)
    ref.ln_final.weight.copy_(model.ln_final.w)
    ref.ln_final.bias.copy_(model.ln_final.b)
    return ref


def n_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------- ablations: TransformerLens pieces, swapped out
# Each patch replaces one piece of a TransformerLens model by the fused op the reference uses, on that
# instance only (its hooks stop firing). Applied cumulatively, they show where the gap goes.

def fused_layernorm(model: nn.Module) -> None:
    """TransformerLens's hand-written LayerNorm (centre, scale hook, divide, affine) -> F.layer_norm."""
    for m in model.modules():
        if isinstance(m, LayerNorm):
            m.forward = lambda x, m=m: F.layer_norm(x, (m.length,), m.w, m.b, m.eps)  # type: ignore[method-assign]


def sdpa_attention(model: nn.Module) -> None:
    """Explicit scores, causal mask, softmax, NaN guard and pattern @ v -> F.scaled_dot_product_attention."""
    for m in model.modules():
        if isinstance(m, Attention):
            def forward(query_input: Tensor, key_input: Tensor, value_input: Tensor, m: Attention = m, **_: object) -> Tensor:
                q, k, v = m.calculate_qkv_matrices(query_input, key_input, value_input)  # [batch, pos, head, d_head]
                q, k, v = (rearrange(t, "b p h d -> b h p d") for t in (q, k, v))
                z = rearrange(F.scaled_dot_product_attention(q, k, v, is_causal=True), "b h p d -> b p (h d)")
                return F.linear(z, rearrange(m.W_O, "h d m -> m (h d)"), m.b_O)
            m.forward = forward  # type: ignore[method-assign]


def single_ln1(model: nn.Module) -> None:
    """TransformerBlock applies ln1 three times (query, key and value inputs) -> once; drops block hooks."""
    for m in model.modules():
        if isinstance(m, TransformerBlock):
            def forward(resid_pre: Tensor, m: TransformerBlock = m, **_: object) -> Tensor:
                x = m.ln1(resid_pre)
                resid_mid = resid_pre + m.attn(x, x, x)
                return resid_mid + m.mlp(m.ln2(resid_mid))
            m.forward = forward  # type: ignore[method-assign]


LADDER: list[tuple[str, list[Callable[[nn.Module], None]]]] = [
    ("TransformerLens as is", [remove_fast_path]),
    ("+ F.layer_norm", [remove_fast_path, fused_layernorm]),
    ("+ SDPA attention", [remove_fast_path, fused_layernorm, sdpa_attention]),
    ("+ ln1 once per block", [remove_fast_path, fused_layernorm, sdpa_attention, single_ln1]),
    ("ours (interp.fast, no hooks)", []),
]


# ------------------------------------------------------------------------------------------- timing

def clock(device: torch.device) -> float:
    """time.perf_counter() once queued GPU work has finished (kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def time_steps(model: nn.Module, opt: torch.optim.Optimizer, batches: list[Batch], steps: int,
               cfg: TrainConfig, device: torch.device) -> float:
    """Seconds for ``steps`` calls of interp.train.train_step, cycling through ``batches``."""
    t0 = clock(device)
    for i in range(steps):
        train_step(model, opt, batches[i % len(batches)], cfg.lr, cfg.grad_clip)
    return clock(device) - t0


def interleaved_rates(runs: dict[str, tuple[nn.Module, torch.optim.Optimizer]], batches: list[Batch],
                      bench: BenchConfig, cfg: TrainConfig, device: torch.device) -> dict[str, list[float]]:
    """tokens/s of each run per timed block; blocks alternate between runs, order reversed every round."""
    tokens = batches[0].inputs.shape[0] * batches[0].inputs.shape[1]
    for model, opt in runs.values():
        time_steps(model, opt, batches, bench.warmup, cfg, device)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(bench.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            model, opt = runs[name]
            rates[name].append(bench.steps * tokens / time_steps(model, opt, batches, bench.steps, cfg, device))
    return rates


@torch.no_grad()
def max_diff(a: nn.Module, b: nn.Module, batch: Batch) -> float:
    """Largest absolute difference between the two models' outputs on ``batch``."""
    return (a(batch.inputs) - b(batch.inputs)).abs().max().item()


def on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` on ``device``; models are built on the CPU, and HookedTransformer.to prints, so skip that move."""
    return model if device.type == "cpu" else model.to(device)


def build_pair(spec: ModelSpec, cfg: TrainConfig, device: torch.device,
               tl_path: bool = False) -> dict[str, tuple[nn.Module, torch.optim.Optimizer]]:
    """Our model and its reference twin (same weights), each with its AdamW from make_optimizer. With
    ``tl_path``, also our model on TransformerLens's own forward (what runs once a hook is attached)."""
    ours = spec.build()
    ref = reference_like(ours)
    runs = {"ours": on_device(ours.train(), device), "reference": on_device(ref, device)}
    if tl_path:
        runs["TL path"] = on_device(remove_fast_path(spec.build()).train(), device)
    return {name: (model, make_optimizer(model, cfg)) for name, model in runs.items()}  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ profile

def phase_split(model: nn.Module, opt: torch.optim.Optimizer, batches: list[Batch], cfg: TrainConfig,
                device: torch.device, steps: int) -> dict[str, float]:
    """Median ms of forward+loss, backward, and clip+AdamW over ``steps`` steps (the pieces of train_step)."""
    times: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}
    for i in range(steps):
        batch = batches[i % len(batches)]
        t0 = clock(device)
        loss = loss_fn(model(batch.inputs), batch)
        t1 = clock(device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = clock(device)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        t3 = clock(device)
        for k, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
            times[k].append(1000 * dt)
    return {k: statistics.median(v) for k, v in times.items()}


def top_ops(model: nn.Module, opt: torch.optim.Optimizer, batches: list[Batch], cfg: TrainConfig, steps: int,
            k: int = 10) -> tuple[int, list[tuple[str, float, int]]]:
    """aten ops per train step, and the ``k`` ops with most self CPU time: (name, % of aten self time, calls per step)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            train_step(model, opt, batches[i % len(batches)], cfg.lr, cfg.grad_clip)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    n_ops = sum(e.count for e in events) // steps
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return n_ops, [(e.key, 100 * e.self_cpu_time_total / total, e.count // steps) for e in events[:k]]


def component_ms(ours: nn.Module, ref: RefGPT, batch: Batch, reps: int) -> list[tuple[str, float, float]]:
    """Median ms of forward + backward of each piece of layer 0, ours vs the reference's, on the same
    [batch, pos, d_model] input: (piece, ours, reference). Pieces are timed alternately."""
    x = torch.randn(*batch.inputs.shape[:2], ours.cfg.d_model, device=batch.inputs.device)  # type: ignore[union-attr]
    block, ref_block = ours.blocks[0], ref.blocks[0]
    pieces: list[tuple[str, Callable[[Tensor], Tensor | tuple[Tensor, ...]], Callable[[Tensor], Tensor | tuple[Tensor, ...]]]] = [
        ("LayerNorm (x1)", block.ln1, ref_block.ln1),
        ("attention, LN excluded", lambda h: block.attn(h, h, h), ref_block.attn),
        ("  of which Q, K, V proj.", lambda h: block.attn.calculate_qkv_matrices(h, h, h), ref_block.attn.qkv),
        ("MLP", block.mlp, lambda h: ref_block.mlp_out(ref_block.act(ref_block.mlp_in(h)))),
        ("whole block", block, ref_block),
        ("final LN + unembed", lambda h: ours.unembed(ours.ln_final(h)), lambda h: ref.unembed(ref.ln_final(h))),
    ]
    out: list[tuple[str, float, float]] = []
    for name, mine, theirs in pieces:
        times: tuple[list[float], list[float]] = ([], [])
        for i in range(2 * reps + 2):
            fn, sink = (mine, times[0]) if i % 2 == 0 else (theirs, times[1])
            h = x.detach().requires_grad_()
            t0 = clock(x.device)
            y = fn(h)
            y = y if isinstance(y, tuple) else (y,)
            torch.autograd.backward(y, [torch.ones_like(t) for t in y])
            if i >= 2:  # the first of each is warm-up
                sink.append(1000 * (clock(x.device) - t0))
        ours.zero_grad(set_to_none=True); ref.zero_grad(set_to_none=True)
        out.append((name, statistics.median(times[0]), statistics.median(times[1])))
    return out


@torch.no_grad()
def calls_per_forward(model: nn.Module, batch: Batch, cls: type[nn.Module]) -> int:
    """How many times one forward pass calls modules of class ``cls``."""
    calls = 0

    def count(*_: object) -> None:
        nonlocal calls
        calls += 1

    handles = [m.register_forward_pre_hook(count) for m in model.modules() if isinstance(m, cls)]
    try:
        model(batch.inputs)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def profile_gap(spec: ModelSpec, task: TaskBase, bench: BenchConfig, cfg: TrainConfig, batches: list[Batch],
                device: torch.device) -> None:
    """Print where our stack spends the time the reference does not."""
    tokens = batches[0].inputs.shape[0] * batches[0].inputs.shape[1]
    pair = build_pair(spec, cfg, device)

    print("\n== forward / backward / optimizer, median ms per step ==")
    for name, (model, opt) in pair.items():
        phase_split(model, opt, batches, cfg, device, bench.warmup)
        ms = phase_split(model, opt, batches, cfg, device, bench.steps * 2)
        print(f"{name:>10}: forward {ms['forward']:7.1f}   backward {ms['backward']:7.1f}   "
              f"optimizer {ms['optimizer']:6.1f}   total {sum(ms.values()):7.1f}")

    print("\n== pieces of layer 0, forward + backward, median ms (ours / reference) ==")
    (ours, _), (ref, _) = pair["ours"], pair["reference"]
    for name, mine, theirs in component_ms(ours, ref, batches[0], reps=4 * bench.steps):  # type: ignore[arg-type]
        print(f"{name:<24} {mine:7.2f} / {theirs:7.2f}   x{mine / theirs:.2f}")
    print(f"(a block applies ln1 to its query, key and value inputs: {calls_per_forward(ours, batches[0], LayerNorm)} LayerNorm "
          f"calls per forward here, {2 * len(ref.blocks) + 1} in the reference)")

    print("\n== ablation ladder: TransformerLens pieces swapped for fused ops (cumulative) ==")
    runs: dict[str, tuple[nn.Module, torch.optim.Optimizer]] = {}
    check = batches[0].to(device)
    plain = on_device(spec.build(), device)
    for label, patches in LADDER:
        model = on_device(spec.build().train(), device)
        for patch in patches:
            patch(model)
        diff = max_diff(model, plain, check)
        if diff > 1e-3:
            raise RuntimeError(f"ablation {label!r} changed the outputs by {diff:.2e}")
        runs[label] = (model, make_optimizer(model, cfg))
    runs["reference (nanoGPT + SDPA)"] = pair["reference"]
    rates = interleaved_rates(runs, batches, bench, cfg, device)
    ref_rate = statistics.median(rates["reference (nanoGPT + SDPA)"])
    for label, r in rates.items():
        med = statistics.median(r)
        print(f"{label:<30} {med:9.0f} tokens/s   {1000 * tokens / med:7.1f} ms/step   ratio {med / ref_rate:.2f}")

    print("\n== fixed cost per step (batch size 1: Python, dispatch, small kernels) ==")
    g = torch.Generator().manual_seed(1)
    small = [task.sample(1, bench.n_examples, g).to(device) for _ in range(4)]  # type: ignore[attr-defined, arg-type]
    tiny = dataclasses.replace(bench, steps=20, repeats=3)
    for label, r in interleaved_rates(build_pair(spec, cfg, device), small, tiny, cfg, device).items():
        print(f"{label:>10}: {1000 * small[0].inputs.shape[1] / statistics.median(r):6.2f} ms/step")
    n_calls = calls_per_forward(pair["ours"][0], batches[0], HookPoint)
    hp, x = HookPoint(), batches[0].inputs.new_zeros(())
    t0 = time.perf_counter()
    for _ in range(10_000):
        hp(x)
    us = (time.perf_counter() - t0) / 10_000 * 1e6
    print(f"HookPoints: {n_calls} calls per forward x {us:.1f} us per call (no hooks) = {n_calls * us / 1000:.2f} ms per step")

    if device.type == "cpu":
        print("\n== top aten ops by self CPU time (torch.profiler, 4 steps; shares, as the profiler slows each op) ==")
        for name, (model, opt) in pair.items():
            n_ops, ops = top_ops(model, opt, batches, cfg, steps=4)
            print(f"{name}: {n_ops} aten ops per step")
            for op, share, calls in ops:
                print(f"    {op:<58} {share:5.1f}%  {calls:4d} calls/step")


# --------------------------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("modular", "linear"), default="modular")
    parser.add_argument("--steps", type=int, default=BenchConfig.steps, help="timed steps per block")
    parser.add_argument("--repeats", type=int, default=BenchConfig.repeats, help="timed blocks per model")
    parser.add_argument("--warmup", type=int, default=BenchConfig.warmup, help="untimed steps per model first")
    parser.add_argument("--batch-size", type=int, default=BenchConfig.batch_size)
    parser.add_argument("--n-examples", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when available)")
    parser.add_argument("--profile", action="store_true", help="then break down what costs our stack the difference")
    args = parser.parse_args()
    for name in ("steps", "repeats", "batch_size", "n_examples", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0, got {args.warmup}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")

    task, default_examples = make_task(args.task)
    bench = BenchConfig(task=args.task, n_examples=args.n_examples or default_examples, batch_size=args.batch_size,
                        steps=args.steps, repeats=args.repeats, warmup=args.warmup, threads=args.threads,
                        device=args.device)
    if bench.threads is not None:
        torch.set_num_threads(bench.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if bench.device == "auto" else torch.device(bench.device)
    cfg = TrainConfig(batch_size=bench.batch_size, n_examples=bench.n_examples, seed=bench.seed)
    spec = ModelSpec.for_task(task, bench.n_examples, n_layers=bench.n_layers, n_heads=bench.n_heads,
                              d_model=bench.d_model, d_mlp=bench.d_mlp, act_fn=bench.act_fn, seed=bench.seed)
    g = torch.Generator().manual_seed(bench.seed)
    batches = [task.sample(bench.batch_size, bench.n_examples, g).to(device) for _ in range(bench.n_batches)]  # type: ignore[attr-defined]
    batch_tokens, seq_len = bench.batch_size * batches[0].inputs.shape[1], batches[0].inputs.shape[1]

    machine = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}   threads {torch.get_num_threads()}   device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f"   machine {machine}, {os.cpu_count()} CPUs ({platform.platform()})")
    print(f"task {task.describe()}   n_examples {bench.n_examples} -> {seq_len} tokens   batch {bench.batch_size}"  # type: ignore[attr-defined]
          f"   model {bench.n_layers}L {bench.n_heads}H d_model {bench.d_model} d_mlp {bench.d_mlp} {bench.act_fn}")

    load_start = os.getloadavg()[0]  # other processes on the machine skew both timings; report it
    runs = build_pair(spec, cfg, device, tl_path=True)
    (ours, _), (ref, _) = runs["ours"], runs["reference"]
    print(f"params: ours {n_params(ours):,}   reference {n_params(ref):,}")
    if n_params(ours) != n_params(ref):
        raise RuntimeError("the two models differ in parameter count; the comparison would not be fair")
    diff = max_diff(ours, ref, batches[0])
    print(f"same weights, max |output difference| {diff:.2e}")
    if diff > 1e-3:
        raise RuntimeError("the reference does not compute the same function as our model")

    print(f"timing: {bench.warmup} warm-up steps each, then {bench.repeats} alternating blocks of "
          f"{bench.steps} steps ({batch_tokens} tokens/step)")
    rates = interleaved_rates(runs, batches, bench, cfg, device)
    med = {name: statistics.median(r) for name, r in rates.items()}
    for name, r in rates.items():
        print(f"{name:>10}: {med[name]:9.0f} tokens/s (median; min {min(r):.0f}, max {max(r):.0f})"
              f"   {1000 * batch_tokens / med[name]:.1f} ms/step")
    print(f"ratio: {med['ours'] / med['reference']:.2f}")
    print(f"(TransformerLens's own path, taken when a hook is attached: ratio {med['TL path'] / med['reference']:.2f})")
    print(f"load average (1 min) at start {load_start:.2f}, at end {os.getloadavg()[0]:.2f}")

    if args.profile:
        profile_gap(spec, task, bench, cfg, batches, device)


if __name__ == "__main__":
    main()
