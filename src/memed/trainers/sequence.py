"""Sequence trainers: the stateful multi-horizon LSTM and the fixed-window transformer (torch).

Sequences are *runs*: a token's uninterrupted stretch of ready bars (a long gap restarts the token's
features and, in serving, the LSTM's state). The LSTM trains on whole runs with truncated
back-propagation through time — state carried across chunks, gradients cut between them — and is
supervised at every step that has a training label, with a focal loss. The transformer trains on
windows of the last ``window`` feature vectors of a run.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from memed.config import LstmConfig, TransformerConfig
from memed.data.frames import run_bounds
from memed.models.families import family
from memed.models.manifest import ModelEntry
from memed.models.nets import LstmNet, TransformerNet
from memed.models.runtime import ModelRunner, run_stateful
from memed.models.scaler import Scaler
from memed.models.torch_export import export_lstm, export_transformer
from memed.trainers.dataset import TrainingData
from memed.trainers.progress import NullProgress, ProgressSink
from memed.trainers.trained import PARITY_ROWS, Fitted, Trained, TrainJob


@dataclass
class Runs:
    """Whole runs: ``x[i]`` [T_i, F] features, ``y[i]`` [T_i, H] labels (NaN where unknown), and per
    step the split (``split[i]`` of str or None)."""

    x: list[np.ndarray]
    y: list[np.ndarray]
    split: list[np.ndarray]


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Mean focal loss over the labelled entries (``target`` NaN = no label)."""
    mask = ~torch.isnan(target)
    if not bool(mask.any()):
        return logits.sum() * 0.0
    z, t = logits[mask], target[mask]
    bce = nn.functional.binary_cross_entropy_with_logits(z, t, reduction="none")
    p_t = torch.exp(-bce)
    return ((1.0 - p_t) ** gamma * bce).mean()


def _masked(y: np.ndarray, split: np.ndarray, name: str, burn_in: int = 0) -> np.ndarray:
    """``y`` where the step belongs to split ``name`` and is past the run's first ``burn_in`` steps."""
    out = y.copy()
    out[split != name] = np.nan
    out[:burn_in] = np.nan
    return out


def _lstm_batches(runs: Runs, lanes: int) -> list[list[int]]:
    order = sorted(range(len(runs.x)), key=lambda i: len(runs.x[i]))
    return [order[i : i + lanes] for i in range(0, len(order), lanes)]


def _pad(arrays: list[np.ndarray], length: int) -> np.ndarray:
    out = np.full((len(arrays), length, arrays[0].shape[1]), np.nan)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


def lstm_forward_runs(net: LstmNet, xs: list[np.ndarray]) -> list[np.ndarray]:
    """Full-sequence torch probabilities for each run (state from zero), no gradient."""
    net.eval()
    outs = []
    with torch.no_grad():
        for x in xs:
            h, c = net.zero_state(1)
            logits, _, _ = net(torch.from_numpy(x[None]), h, c)
            outs.append(torch.sigmoid(logits[0]).double().numpy())
    return outs


def train_lstm(runs: Runs, scaler_x: np.ndarray, cfg: LstmConfig, seed: int, doc: str,
               progress: ProgressSink | None = None) -> tuple[Trained, LstmNet]:  # fmt: skip
    progress = progress or NullProgress()
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 1)
    n_h = runs.y[0].shape[1]
    net = LstmNet(Scaler.fit(scaler_x), n_h, cfg.hidden, cfg.layers)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
    # training runs end at their last training step (temporal splits keep train first)
    train_len = []
    for s in runs.split:
        idx = np.flatnonzero(s == "train")
        train_len.append(int(idx[-1]) + 1 if len(idx) else 0)
    usable = [i for i, n in enumerate(train_len) if n > 1]
    sub = Runs(
        [runs.x[i][: train_len[i]] for i in usable],
        [_masked(runs.y[i], runs.split[i], "train", cfg.burn_in)[: train_len[i]] for i in usable],
        [runs.split[i][: train_len[i]] for i in usable],
    )
    batches = _lstm_batches(sub, cfg.lanes)
    chunks_per_epoch = sum(-(-max(len(sub.x[i]) for i in b) // cfg.chunk) for b in batches)
    best_state, best_val = copy.deepcopy(net.state_dict()), float("inf")
    progress.start("lstm", "lstm: epoch 1", cfg.epochs * chunks_per_epoch)
    val_losses: list[float] = []
    for epoch in range(cfg.epochs):
        net.train()
        for b in batches:
            length = max(len(sub.x[i]) for i in b)
            xb = torch.from_numpy(_pad([sub.x[i] for i in b], length))
            yb = torch.from_numpy(_pad([sub.y[i] for i in b], length)).float()
            h, c = net.zero_state(len(b))
            for at in range(0, length, cfg.chunk):
                logits, h, c = net(xb[:, at : at + cfg.chunk], h, c)
                loss = focal_loss(logits, yb[:, at : at + cfg.chunk], cfg.focal_gamma)
                opt.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                h, c = h.detach(), c.detach()
                progress.advance("lstm", description=f"lstm: epoch {epoch + 1}/{cfg.epochs}")
        val = _lstm_val_loss(net, runs, cfg.focal_gamma, cfg.burn_in)
        val_losses.append(val)
        if val < best_val:
            best_val, best_state = val, copy.deepcopy(net.state_dict())
    progress.finish("lstm")
    net.load_state_dict(best_state)
    net.eval()
    trained = Trained(
        name="lstm",
        model=export_lstm(net, doc),
        native_test=np.empty((0, n_h)),
        state_shape=(cfg.layers, cfg.hidden),
        seconds=time.perf_counter() - t0,
    )
    return trained, net


def _lstm_val_loss(net: LstmNet, runs: Runs, gamma: float, burn_in: int) -> float:
    probs = lstm_forward_runs(net, runs.x)
    logits = np.concatenate([np.log(p / (1 - p)) for p in probs]) if probs else np.empty((0, 1))
    target = np.concatenate([_masked(y, s, "val", burn_in) for y, s in zip(runs.y, runs.split, strict=True)])
    return float(focal_loss(torch.from_numpy(logits), torch.from_numpy(target), gamma))


# --------------------------------------------------------------------------- transformer
def window_index(runs_id: np.ndarray, window: int) -> np.ndarray:
    """Rows (of a frame sorted by run) that end a full window inside one run."""
    start = np.r_[True, runs_id[1:] != runs_id[:-1]]
    pos = np.arange(len(runs_id)) - np.maximum.accumulate(np.where(start, np.arange(len(runs_id)), 0))
    return np.flatnonzero(pos >= window - 1)


def gather_windows(x: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    return x[ends[:, None] + np.arange(-window + 1, 1)[None, :]]


def train_transformer(x: np.ndarray, y: np.ndarray, run_id: np.ndarray, split: np.ndarray,
                      cfg: TransformerConfig, seed: int, doc: str,
                      progress: ProgressSink | None = None) -> tuple[Trained, TransformerNet]:  # fmt: skip
    progress = progress or NullProgress()
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    torch.set_num_threads(os.cpu_count() or 1)
    ends = window_index(run_id, cfg.window)
    labelled = ~np.all(np.isnan(y[ends]), axis=1)
    train_ends = ends[(split[ends] == "train") & labelled]
    val_ends = ends[(split[ends] == "val") & labelled]
    n_h = y.shape[1]
    net = TransformerNet(Scaler.fit(x[split == "train"]), n_h, cfg.window, cfg.d_model, cfg.heads, cfg.layers)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
    per_epoch = min(len(train_ends), cfg.max_windows)
    steps = -(-per_epoch // cfg.batch_size)
    progress.start("transformer", "transformer: epoch 1", cfg.epochs * steps)
    best_state, best_val = copy.deepcopy(net.state_dict()), float("inf")
    for epoch in range(cfg.epochs):
        net.train()
        picks = rng.permutation(train_ends)[:per_epoch]
        for s in range(0, per_epoch, cfg.batch_size):
            idx = picks[s : s + cfg.batch_size]
            logits = net(torch.from_numpy(gather_windows(x, idx, cfg.window)))
            loss = focal_loss(logits, torch.from_numpy(y[idx]).float(), 0.0)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            progress.advance("transformer", description=f"transformer: epoch {epoch + 1}/{cfg.epochs}")
        val = _transformer_loss(net, x, y, val_ends[: cfg.max_windows], cfg.window)
        if val < best_val:
            best_val, best_state = val, copy.deepcopy(net.state_dict())
    progress.finish("transformer")
    net.load_state_dict(best_state)
    net.eval()
    trained = Trained(
        name="transformer",
        model=export_transformer(net, doc),
        native_test=np.empty((0, n_h)),
        window=cfg.window,
        seconds=time.perf_counter() - t0,
    )
    return trained, net


def transformer_predict(net: TransformerNet, x: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    net.eval()
    outs = []
    with torch.no_grad():
        for s in range(0, len(ends), 2048):
            w = torch.from_numpy(gather_windows(x, ends[s : s + 2048], window))
            outs.append(torch.sigmoid(net(w)).double().numpy())
    return np.concatenate(outs) if outs else np.empty((0, net.head.out_features))


def onnx_window_predict(
    session: ort.InferenceSession, x: np.ndarray, ends: np.ndarray, window: int, n_horizons: int
) -> np.ndarray:
    """The exported window model scored by ONNX Runtime on the windows ending at ``ends``."""
    outs = [
        session.run(None, {"window": gather_windows(x, ends[s : s + 2048], window)})[0]
        for s in range(0, len(ends), 2048)
    ]
    return np.concatenate(outs) if outs else np.empty((0, n_horizons))


def _transformer_loss(
    net: TransformerNet, x: np.ndarray, y: np.ndarray, ends: np.ndarray, window: int
) -> float:
    if len(ends) == 0:
        return float("inf")
    p = np.clip(transformer_predict(net, x, ends, window), 1e-7, 1 - 1e-7)
    t = y[ends]
    keep = ~np.isnan(t)
    return float(-np.mean(t[keep] * np.log(p[keep]) + (1 - t[keep]) * np.log(1 - p[keep])))


# --------------------------------------------------------------------------- the families' trainers
def table_runs(data: TrainingData) -> Runs:
    """The (run-sorted) training table cut into its runs: features, labels and splits per run."""
    x, y = data.x(), data.y()
    split = data.frame["split"].fill_null("").to_numpy()
    bounds = run_bounds(data.frame["run"].to_numpy())
    sl = [slice(a, b) for a, b in itertools.pairwise(bounds)]
    return Runs([x[s] for s in sl], [y[s] for s in sl], [split[s] for s in sl])


FORGET_RTOL = 1e-6
"""Relative agreement at which a stateful net counts as having forgotten where its run started."""
FORGET_RUNS = 64
"""Runs (the longest of the training table) on which the forgetting is measured."""


def forgetting_steps(runner: ModelRunner, runs: list[np.ndarray], offset: int) -> int:
    """Steps a stateful model needs, started ``offset`` steps into a run, before its probabilities agree
    (to :data:`FORGET_RTOL`) for good with the model run from the run's start: the worst run of
    ``runs``. What its burn-in must cover for the daemon's output not to depend on when it started."""
    worst = 0
    for x in runs:
        if len(x) <= offset + 1:
            continue
        full, late = run_stateful(runner, [x, x[offset:]])
        scale = np.maximum(np.abs(full[offset:]), np.abs(late))
        bad = np.flatnonzero((np.abs(full[offset:] - late) > FORGET_RTOL * scale).any(axis=1))
        if len(bad):
            worst = max(worst, int(bad[-1]) + 1)
    return worst


def fit_lstm(job: TrainJob) -> Fitted:
    """Train on whole runs past their burn-in; measure how long the trained net takes to forget where a
    run started and serve it only past that (the configured burn-in, or the measured steps with a quarter
    more for other data, whichever is longer); score every run with the exported graph stepped as the
    daemon steps it (no probability before the burn-in, as served)."""
    runs = table_runs(job.data)
    c = job.cfg
    trained, net = train_lstm(runs, job.x_tr, c.lstm, c.seed, job.doc, job.progress)
    entry = ModelEntry(
        name=trained.name,
        file=f"{trained.name}.onnx",
        sha256="",
        kind=family(trained.name).kind,
        state_shape=trained.state_shape,
    )
    runner = ModelRunner(entry, trained.session(), len(job.data.horizons))
    longest = sorted(runs.x, key=len)[-FORGET_RUNS:]
    trained.forgets_after = forgetting_steps(runner, longest, max(c.lstm.burn_in, 1))
    trained.burn_in = max(c.lstm.burn_in, math.ceil(1.25 * trained.forgets_after))
    warnings: tuple[str, ...] = ()
    if trained.burn_in > c.lstm.burn_in:
        warnings = (f"lstm: its state took {trained.forgets_after} steps to forget where a run started, "
                    f"more than train.lstm.burn_in = {c.lstm.burn_in}: served from step "
                    f"{trained.burn_in}",)  # fmt: skip
    p_runs = run_stateful(runner, runs.x)
    torch_all = np.concatenate(lstm_forward_runs(net, runs.x))
    gap = float(np.max(np.abs(np.concatenate(p_runs)[job.test_idx] - torch_all[job.test_idx]), initial=0.0))
    for p in p_runs:
        p[: trained.burn_in] = np.nan
    p_all = np.concatenate(p_runs)
    return Fitted(trained, p_all[job.test_idx], p_all[job.val_idx], gap, warnings)


def fit_transformer(job: TrainJob) -> Fitted:
    """Train on windows of each run; score the test rows that end a full window (NaN for the others)."""
    data, c = job.data, job.cfg
    x_all, y_all = data.x(), data.y()
    split = data.frame["split"].fill_null("").to_numpy()
    run_id = data.frame["run"].to_numpy()
    window = c.transformer.window
    trained, net = train_transformer(
        x_all, y_all, run_id, split, c.transformer, c.seed, job.doc, job.progress
    )
    ends = window_index(run_id, window)
    n_h = len(data.horizons)
    sess = trained.session()

    def score(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = np.full((len(idx), n_h), np.nan)
        scored = np.isin(idx, ends)
        p[scored] = onnx_window_predict(sess, x_all, idx[scored], window, n_h)
        return p, idx[scored]

    p_test, te_ends = score(job.test_idx)
    native = transformer_predict(net, x_all, te_ends[:PARITY_ROWS], window)
    onnx_p = p_test[np.isin(job.test_idx, ends)]
    gap = float(np.max(np.abs(onnx_p[:PARITY_ROWS] - native), initial=0.0))
    return Fitted(trained, p_test, score(job.val_idx)[0], gap)
