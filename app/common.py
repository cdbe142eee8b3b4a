"""What every dashboard page shares: the page table, the page frame (sidebar, checkpoint, settings), cached
loading and probes, and the small views.

dashboard.py builds the navigation from ``PAGES`` and runs ``frame`` once per script run before the selected
page; the page reads what the frame set up with ``current()``. The sidebar's choices live in
``st.session_state`` under plain keys (``SELECTED``, ``N_SEQ``, ...), so they carry over from page to page;
each widget writes its own key back there when it changes. Heavy modules (torch, interp, probes) are imported
inside the functions that need them, so Home renders without them.

Models are cached with ``st.cache_resource`` and results with ``st.cache_data``, both keyed by the
checkpoint's path and fingerprint (config.json bytes + the size and mtime of its weights), so a model
retrained in place is reloaded and its results recomputed.

Over 400 lines on purpose: the one page frame and the small views every page shares (the pages stay short).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import streamlit as st

from zoo import ModelEntry, read_sweeps, read_zoo, zoo_dir

# session_state keys shared by the pages
SELECTED = "ckpt_path"  # the chosen checkpoint folder (str)
N_SEQ = "n_sequences"  # sequences per probe
SEED = "seed"
CORRUPTION = "corruption"
METRIC = "metric"
OTHER = "(type a path…)"

FRAME = "_frame"  # the Frame of the current script run
DEFAULTS: dict[str, Any] = {N_SEQ: 64, SEED: 0}


# --- the pages and their frame -------------------------------------------------------------------------


@dataclass(frozen=True)
class PageInfo:
    """One page: its file under app/, sidebar label, heading, one-line help (Home's links), URL path, and what
    the frame prepares for it: nothing (Home), the chosen ``path``, or the loaded ``checkpoint``."""

    file: str
    label: str
    title: str
    help: str
    url: str
    needs: Literal["nothing", "path", "checkpoint"] = "checkpoint"


PAGES: tuple[PageInfo, ...] = (
    PageInfo("views/0_Home.py", "Home", "icl-interp", "the zoo at a glance", "Home", "nothing"),
    PageInfo("views/1_Zoo.py", "Zoo", "Zoo", "every checkpoint: task, spec, steps, ID/OOD scores, card", "Zoo", "path"),
    PageInfo("views/2_Training.py", "Training", "Training", "loss and ID/OOD curves; the modular sweep's phase diagram",
             "Training", "path"),
    PageInfo("views/3_ICL_curves.py", "ICL curves", "In-context curves",
             "error vs number of examples beside the baselines; extrapolation", "ICL_curves"),
    PageInfo("views/4_Attention.py", "Attention", "Attention", "attention patterns by token role; head-type scores",
             "Attention"),
    PageInfo("views/5_Patching.py", "Patching", "Patching", "activation patching heatmaps, per-example spread, JSON/CSV",
             "Patching"),
    PageInfo("views/6_Heads.py", "Heads", "Heads", "direct attribution, ablation, attribution patching vs exact", "Heads"),
    PageInfo("views/7_MLP_and_algorithms.py", "MLP and algorithms", "MLP and algorithms",
             "Fourier, PCA circles, neuron clusters, algorithm maps", "MLP_and_algorithms"),
    PageInfo("views/8_Saturation.py", "Saturation", "Saturation",
             "entropy, max weight, LN scale and prediction vs input scale", "Saturation"),
    PageInfo("views/9_Circuit.py", "Circuit", "Circuit",
             "edge-level circuits: the graph of the top-k edges, faithfulness against k, EAP against exact", "Circuit"),
)


@dataclass(frozen=True)
class Frame:
    """What the frame hands the page it runs: the chosen checkpoint folder, the checkpoint (loaded only for the
    pages that need one), and the probe settings from the sidebar."""

    path: str | None
    ckpt: Any = None
    n: int = DEFAULTS[N_SEQ]
    seed: int = DEFAULTS[SEED]


def frame(page: PageInfo) -> Frame:
    """The setup every page shares, run once before it: page config and heading, the sidebar (zoo folder, model,
    probe settings), and for a page that needs a checkpoint its loading and one line describing it; when it
    cannot be loaded the run stops here, after the reason. ``current()`` returns the result to the page."""
    st.set_page_config(page_title="icl-interp" if page.needs == "nothing" else f"icl-interp · {page.title}",
                       layout="wide")
    st.title(page.title)
    with st.sidebar:
        st.caption(f"Zoo folder: `{zoo_dir()}`")
        if st.button("Reload zoo"):
            load_zoo.clear()
            load_sweeps.clear()
        st.header("Model")
        path = sidebar_model()
        if page.needs != "nothing":
            st.header("Probe")
            persistent(st.number_input, "sequences per probe", N_SEQ, DEFAULTS[N_SEQ], min_value=8, max_value=2048,
                       step=8, help="how many sequences the probes on this page sample from the task")
            persistent(st.number_input, "seed", SEED, DEFAULTS[SEED], min_value=0, step=1)
    n = int(st.session_state.get(N_SEQ, DEFAULTS[N_SEQ]))
    seed = int(st.session_state.get(SEED, DEFAULTS[SEED]))
    ckpt = None
    if page.needs == "checkpoint":
        ckpt = load(path)
        if ckpt is None:
            st.stop()
        st.markdown(describe(ckpt))
    st.session_state[FRAME] = out = Frame(path, ckpt, n, seed)
    return out


def current() -> Frame:
    """The frame of this script run (dashboard.py sets it up before the page runs)."""
    return st.session_state[FRAME]


# --- the zoo -------------------------------------------------------------------------------------------


@st.cache_data(ttl=30, show_spinner=False)
def load_zoo(root: str) -> list[ModelEntry]:
    """Cached read of the zoo folder; the ttl lets freshly trained models show up on their own."""
    return read_zoo(root)


@st.cache_data(ttl=30, show_spinner=False)
def load_sweeps(root: str) -> list[str]:
    """Cached list of the sweep.json files in the zoo folder."""
    return [str(p) for p in read_sweeps(root)]


def zoo_entries() -> list[ModelEntry]:
    return load_zoo(str(zoo_dir()))


# --- persistent sidebar widgets ------------------------------------------------------------------------


def persistent(widget: Callable[..., Any], label: str, key: str, default: Any, options: list[Any] | None = None,
               **kw: Any) -> Any:
    """A widget whose value lives in ``st.session_state[key]`` across pages (Streamlit drops the state of a
    widget that a page does not draw, so the widget gets its own key and copies its value back)."""
    if key not in st.session_state or (options is not None and st.session_state[key] not in options):
        st.session_state[key] = default
    wkey = f"_w_{key}"
    st.session_state[wkey] = st.session_state[key]

    def sync() -> None:
        st.session_state[key] = st.session_state[wkey]

    if options is not None:
        return widget(label, options, key=wkey, on_change=sync, **kw)
    return widget(label, key=wkey, on_change=sync, **kw)


def settings_field(settings: type, name: str):
    """The ``dataclasses.Field`` ``name`` of a probe's settings dataclass (``probes.settings``)."""
    import dataclasses

    return next(f for f in dataclasses.fields(settings) if f.name == name)


_FIELD_DEFAULT = object()


def setting(settings: type, name: str, key: str, options: Any = None, default: Any = _FIELD_DEFAULT,
            widget: Callable[..., Any] | None = None, **kw: Any) -> Any:
    """A persistent widget for one field of a probe's settings dataclass (``probes.settings``), labelled with the
    field's name and starting at its default, with its help line: a selectbox for a field with choices, a checkbox
    for a bool, a number input for an int (from the field's lower bound).

    ``options``: the values offered instead, a subset of the field's choices (those that apply to this model) or,
    for a field without choices, the values that make sense here (the model's layers); a field's default that is
    not among them (None: the probe decides) starts at ``default``, else at the first option. ``widget``: another
    widget for the options (``st.radio``)."""
    from interp.validation import Interval

    f = settings_field(settings, name)
    kw = {"help": f.metadata.get("help"), **kw}
    choices = f.metadata.get("choices")
    if options is not None or choices:
        options = list(choices if options is None else options)
        if choices and not set(options) <= set(choices):
            raise ValueError(f"{settings.__name__}.{name} has no option(s) {sorted(set(options) - set(choices))}")
        if default is _FIELD_DEFAULT:
            default = f.default if f.default in options else options[0]
        return persistent(widget or st.selectbox, name, key, default, options=options, **kw)
    default = f.default if default is _FIELD_DEFAULT else default
    if isinstance(f.default, bool):
        return persistent(widget or st.checkbox, name, key, default, **kw)
    low = next((c.low for c in f.metadata.get("constraints", ()) if isinstance(c, Interval)), None)
    return persistent(widget or st.number_input, name, key, default, min_value=low, step=1, **kw)


def sidebar_model(entries: list[ModelEntry] | None = None) -> str | None:
    """The model picker: a zoo model or a typed path, kept in ``st.session_state[SELECTED]``. Returns the
    chosen path (None when the zoo is empty and nothing was typed)."""
    entries = zoo_entries() if entries is None else entries
    paths = {e.name: str(e.path) for e in entries}
    current = st.session_state.get(SELECTED)
    names = {p: n for n, p in paths.items()}
    if st.session_state.get("_other") or (current and current not in names):
        choice = OTHER
    elif current in names:
        choice = names[current]
    else:
        choice = next(iter(paths), OTHER)
    st.session_state["_w_model"] = choice

    def on_model() -> None:
        picked = st.session_state["_w_model"]
        st.session_state["_other"] = picked == OTHER
        if picked != OTHER:
            st.session_state[SELECTED] = paths[picked]

    choice = st.selectbox("Model", [*paths, OTHER], key="_w_model", on_change=on_model)
    if choice != OTHER:
        st.session_state[SELECTED] = paths[choice]
        return paths[choice]
    def on_typed() -> None:
        st.session_state[SELECTED] = st.session_state["_w_typed"].strip() or None

    st.session_state["_w_typed"] = current or ""
    typed = st.text_input("Checkpoint folder", key="_w_typed", on_change=on_typed,
                          placeholder="models/<name> or any checkpoint folder")
    path = typed.strip() or None
    st.session_state[SELECTED] = path
    return path


# --- checkpoints ---------------------------------------------------------------------------------------


def fingerprint(path: str) -> str:
    """Cache key of a checkpoint folder: config.json bytes plus size and mtime of the weights and metrics."""
    h = hashlib.sha256(str(Path(path).resolve()).encode())
    folder = Path(path)
    try:
        h.update((folder / "config.json").read_bytes())
    except OSError:
        h.update(b"no config")
    for name in ("weights.safetensors", "metrics.jsonl"):
        try:
            st_ = (folder / name).stat()
            h.update(f"{name}:{st_.st_size}:{st_.st_mtime_ns}".encode())
        except OSError:
            h.update(f"{name}:missing".encode())
    return h.hexdigest()[:16]


def _threads() -> None:
    import torch

    # Tiny models: one thread is as fast, and the machine is shared (see tests/conftest.py).
    if torch.get_num_threads() != 1:
        torch.set_num_threads(int(os.environ.get("ICL_INTERP_THREADS", "1")))


@st.cache_resource(max_entries=32, show_spinner=False)
def _load(path: str, fp: str):  # fp: part of the cache key only
    import interp

    _threads()
    return interp.load(path)


def load(path: str | None):
    """The checkpoint at ``path`` (cached), or None after showing why it cannot be loaded (never a traceback)."""
    from interp.errors import CheckpointError

    if not path:
        st.info("Pick a model in the sidebar, or type the path of a checkpoint folder.")
        return None
    try:
        with st.spinner(f"Loading {path}…"):
            return _load(path, fingerprint(path))
    except CheckpointError as e:
        st.error(f"Cannot load this checkpoint: {e}")
    except Exception as e:  # noqa: BLE001 - anything else a broken folder raises: one line, no traceback
        st.error(f"Cannot load {path}: {type(e).__name__}: {e}")
    return None


def ckpt_key(ckpt) -> tuple[str, str]:
    """(path, fingerprint) of a loaded checkpoint: the cache key of its results."""
    path = str(ckpt.path)
    return path, fingerprint(path)


def describe(ckpt) -> str:
    """One line: name, task, architecture."""
    s = ckpt.spec
    arch = f"{s.n_layers}L × {s.n_heads}H, d={s.d_model}, {'attn-only' if s.attn_only else 'MLP'}, {s.normalization}, {s.scoring}"
    arch += ", bidirectional, query masked as a key" if s.mask == "context" else ""
    return f"**{Path(str(ckpt.path)).name}** · {ckpt.task.describe()} · {arch}"


def boundary_text(value: float | None, spec: str = ".3g") -> str:
    """A boundary value or slope as the saturation views show it: "—" where it could not be read (NaN / None)."""
    import math

    return "—" if value is None or not math.isfinite(value) else format(value, spec)


def saturated_text(value: bool | None) -> str:
    """probes.saturation's ``saturated`` as a word: yes / no, or — where no side of the boundary could be read."""
    return {True: "yes", False: "no"}.get(value, "—")


def has_mlp(ckpt) -> bool:
    return not ckpt.spec.attn_only


def is_regression(ckpt) -> bool:
    return ckpt.task.kind == "regression"


# --- cached probes -------------------------------------------------------------------------------------


@st.cache_data(max_entries=256, show_spinner=False)
def run_probe(name: str, path: str, fp: str, args_json: str) -> Any:
    """``interp.<name>(checkpoint, settings, **args)``, cached by checkpoint fingerprint and arguments (JSON text;
    ``"settings"``: [the settings class name, as ``interp.api`` exports it, and its fields])."""
    import interp
    import interp.api

    _threads()
    args = json.loads(args_json)
    if "settings" in args:
        cls, fields = args.pop("settings")
        args["settings"] = getattr(interp.api, cls)(**fields)
    ckpt = _load(path, fp)
    if name == "error_vs_scale":
        from interp.evaluate import error_vs_scale

        return error_vs_scale(ckpt.model, ckpt.task, n_examples=ckpt.train["n_examples"],
                              generator=__import__("torch").Generator().manual_seed(args.pop("seed", 0)), **args)
    if name == "compare_saturation":
        # models: name -> [path, fingerprint], so a retrained variant is a new cache key too
        models = {k: _load(p, f) for k, (p, f) in args.pop("models").items()}
        return interp.compare_saturation(models, **args)
    if name == "attention":
        return attention_pattern(ckpt, **args)
    return getattr(interp, name)(ckpt, **args)


def probe(name: str, ckpt, message: str | None = None, settings: Any = None, **args: Any) -> Any:
    """A cached probe run with a spinner: ``interp.<name>(ckpt, settings, **args)`` with ``settings`` a
    ``probes.settings`` object (the page's widgets built it); None after showing the error when the probe refuses
    its arguments."""
    path, fp = ckpt_key(ckpt)
    if settings is not None:
        args["settings"] = [type(settings).__name__, settings.to_dict()]
    try:
        with st.spinner(message or f"Running {name}…"):
            return run_probe(name, path, fp, json.dumps(args, sort_keys=True))
    except (ValueError, KeyError, RuntimeError) as e:  # the probe refuses these arguments for this model
        st.error(f"{name} failed: {e}")
        return None
    except Exception as e:  # noqa: BLE001 - a bug in a probe still gets one line on the page, not a traceback
        st.error(f"{name} failed: {type(e).__name__}: {e}")
        return None


def attention_pattern(ckpt, example: int = 0, seed: int = 0) -> dict[str, Any]:
    """One sampled sequence's attention patterns: {"patterns": [layer][head][q][k], "tokens": role labels}."""
    import torch

    g = torch.Generator().manual_seed(seed)
    batch = ckpt.task.sample(example + 1, ckpt.train["n_examples"], g)
    inputs = batch.inputs[example: example + 1]
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(ckpt.spec.n_layers)]
    with torch.no_grad():
        _, cache = ckpt.model.run_with_cache(inputs, names_filter=lambda n: n in names)
    patterns = [cache[n][0].float().tolist() for n in names]  # [layer][head, q, k]
    return {"patterns": patterns, "tokens": token_labels(batch, example)}


def token_labels(batch, example: int = 0) -> list[str]:
    """Role labels per position (x0, y0, z0, …, query), with the token's value for token tasks."""
    labels = list(batch.pos_labels)
    q = batch.query_pos
    out = []
    for i, lab in enumerate(labels):
        role = "query" if i == q else lab
        if batch.inputs.dtype.is_floating_point:
            out.append(role)
        else:
            out.append(f"{role}={int(batch.inputs[example, i])}")
    return out


# --- small views ---------------------------------------------------------------------------------------


def mark_training(fig, scales: list[float], cells: list[tuple[int, int]], *, label: bool = False,
                  saturation: dict[str, Any] | None = None) -> None:
    """The training range on panels against the scale multiplier, drawn the same way on every page: on each
    (row, col) of ``cells`` a log x-axis with scale ≤ 1 (the training distribution) shaded (and labelled once
    with ``label``); with ``saturation`` (a saturation Result's metadata) the range's edge dotted and the boundary
    values B+ and |B−| dashed across those panels, as magnitudes for a log |prediction| axis."""
    import math

    for i, (row, col) in enumerate(cells):
        text = {"annotation_text": "training range", "annotation_position": "top left"} if label and i == 0 else {}
        fig.add_vrect(x0=min(scales), x1=1.0, fillcolor="green", opacity=0.12, line_width=0, row=row, col=col,
                      exclude_empty_subplots=False, **text)
        fig.update_xaxes(type="log", row=row, col=col)
        if saturation is None:
            continue
        edge = max(saturation["range_plus"], -saturation["range_minus"])  # the training range's edge, a magnitude
        fig.add_hline(y=edge, line_dash="dot", line_color="green", annotation_text=f"training range edge {edge:.3g}",
                      row=row, col=col, exclude_empty_subplots=False)
        for side, name in (("plus", "B+"), ("minus", "|B−|")):
            b = saturation[f"boundary_{side}"]
            if b is not None and math.isfinite(b) and b != 0:
                fig.add_hline(y=abs(b), line_dash="dash", line_color="red", annotation_text=f"{name} = {abs(b):.3g}",
                              row=row, col=col, exclude_empty_subplots=False)


def heatmap(z: list[list[float]], x: list[str], y: list[str], title: str, x_title: str, y_title: str,
            zmid: float | None = 0.0, colorscale: str = "RdBu"):
    """A plotly heatmap with labelled axes (category ticks kept in order)."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Heatmap(z=z, x=x, y=y, colorscale=colorscale, zmid=zmid,
                               hovertemplate=f"{y_title}=%{{y}}<br>{x_title}=%{{x}}<br>value=%{{z:.4g}}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=max(260, 60 + 40 * len(y)))
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def zoo_table(entries: list[ModelEntry]) -> None:
    """The zoo as a table (task, spec, steps, last ID / OOD scores), with warnings for unreadable folders."""
    import pandas as pd

    from zoo import zoo_rows

    table = pd.DataFrame(zoo_rows(entries))
    # Drop metric columns no model has, so the table shows only what was logged.
    empty = [c for c in table.columns if c.startswith("last ") and table[c].isna().all()]
    st.dataframe(table.drop(columns=empty), hide_index=True)
    for e in entries:
        if e.error:
            st.warning(f"**{e.name}**: {e.error}")


def embed_html(html: str, height: int) -> None:
    """Self-contained HTML in an iframe: ``streamlit.components.v1.html``, or ``st.iframe`` in the Streamlit
    releases that dropped it."""
    import streamlit.components.v1 as components

    if hasattr(components, "html"):
        components.html(html, height=height, scrolling=True)
    else:  # pragma: no cover - newer Streamlit
        st.iframe(html, height=height)


def without_webgl(fig):
    """The figure with WebGL traces (Scattergl) drawn as SVG ones: a browser without a GPU renders WebGL in
    software, seconds per chart, while a few thousand SVG markers draw in milliseconds."""
    import plotly.graph_objects as go

    data = []
    for trace in fig.data:
        if trace.type == "scattergl":
            spec = trace.to_plotly_json()
            spec.pop("type", None)
            trace = go.Scatter(**spec)
        data.append(trace)
    out = go.Figure(data=data, layout=fig.layout)
    return out


def corruption_and_metric(ckpt: Any, settings: type) -> tuple[str, str]:
    """The ``corruption`` and ``metric`` fields of ``settings`` (PatchSettings, AttributeSettings, CircuitSettings)
    as sidebar selectboxes under keys the patching, heads and circuit pages share, so a choice on one carries to
    the others: the corruptions that apply to the task (no input shift for token tasks), and the task's metrics
    (the field's None is the task's first)."""
    from interp.tasks import CORRUPTIONS
    from interp.api import metrics_for

    token_task = ckpt.task.kind == "classification"
    meta = settings_field(settings, "corruption").metadata
    described = "\n".join(f"- {k}: {CORRUPTIONS[k]}" for k in meta["choices"] if k in CORRUPTIONS)
    corruption = setting(settings, "corruption", CORRUPTION, help=f"{meta['help']}\n\n{described}",
                         options=[c for c in meta["choices"] if not (token_task and c == "shift")])
    return corruption, setting(settings, "metric", METRIC, options=list(metrics_for(ckpt.task)))
