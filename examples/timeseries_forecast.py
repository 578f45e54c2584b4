"""Multi-step forecasting of monthly sunspot numbers (1749-1983) with a FusedLSTM.

    python examples/timeseries_forecast.py                 # 24 months ahead, bundled data
    python examples/timeseries_forecast.py --horizon 12 --impl torch

The series (2,820 months, bundled with pmdarima) has an ~11-year cycle. From the last 20
years of a (square-root, standardized) series the model predicts the next --horizon months
at once (a direct multi-output head). Chronological split: training forecasts start before
1930, validation 1930-1955, test after 1955; scaling is fit on the training period only.
Baselines: seasonal naive (the value one 11-year cycle earlier) and persistence (the last
value). Writes metrics.json and a plot to --out.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fused_lstm import FusedLSTM

CYCLE = 132  # months in the solar cycle, the seasonal naive's period


def load_series() -> "pd.Series":
    from pmdarima.datasets import load_sunspots

    return load_sunspots(as_series=True)


def make_windows(values: np.ndarray, window: int, horizon: int, origins: np.ndarray):
    """x: values[o - window : o], y: values[o : o + horizon] for each forecast origin o."""
    x = np.stack([values[o - window: o] for o in origins])[..., None].astype(np.float32)
    y = np.stack([values[o: o + horizon] for o in origins]).astype(np.float32)
    return x, y


class Forecaster(nn.Module):
    def __init__(self, lstm_cls, hidden: int, horizon: int):
        super().__init__()
        self.lstm = lstm_cls(1, hidden, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x):
        return self.head(self.lstm(x)[1][0][-1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--horizon", type=int, default=24, help="months forecast at once")
    p.add_argument("--window", type=int, default=240, help="months of history per forecast")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--impl", choices=["fused", "torch"], default="fused")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/timeseries")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)

    series = load_series()
    years = np.array([int(str(label).split()[-1]) for label in series.index])
    raw = series.to_numpy(dtype=np.float64)
    root = np.sqrt(raw)  # steadies the variance of the peaks
    first = max(args.window, CYCLE)
    origins = np.arange(first, len(raw) - args.horizon + 1)
    # A forecast belongs to the period of its first predicted month.
    train_o = origins[years[origins] < 1930]
    val_o = origins[(years[origins] >= 1930) & (years[origins] < 1955)]
    test_o = origins[years[origins] >= 1955]
    train_end = train_o[-1] + args.horizon  # the last month any training target uses
    mean, std = root[:train_end].mean(), root[:train_end].std()
    scaled = (root - mean) / std
    to_raw = lambda z: np.clip(z * std + mean, 0, None) ** 2
    (xt, yt), (xv, yv), (xs, ys) = (make_windows(scaled, args.window, args.horizon, o)
                                    for o in (train_o, val_o, test_o))

    model = Forecaster(FusedLSTM if args.impl == "fused" else nn.LSTM, args.hidden, args.horizon)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = torch.from_numpy(xt), torch.from_numpy(yt)

    def evaluate(windows: np.ndarray) -> np.ndarray:
        model.eval()
        return model(torch.from_numpy(windows)).numpy()

    with torch.no_grad():
        history = {"train_loss_before": float(np.mean((evaluate(xt) - yt) ** 2)), "val_loss": []}
    best, best_state, start = float("inf"), None, time.perf_counter()
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in tqdm(range(args.epochs), desc="epochs", disable=args.quiet):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), args.batch_size):
            idx = order[i: i + args.batch_size]
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x[idx]), y[idx]).backward()
            optimizer.step()
        with torch.no_grad():
            val = float(np.mean((evaluate(xv) - yv) ** 2))
        history["val_loss"].append(val)
        if val < best:
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
    history["train_seconds"] = time.perf_counter() - start
    model.load_state_dict(best_state)
    with torch.no_grad():
        history["train_loss_after"] = float(np.mean((evaluate(xt) - yt) ** 2))
        forecast = to_raw(evaluate(xs))

    actual = np.stack([raw[o: o + args.horizon] for o in test_o])
    seasonal = np.stack([raw[o - CYCLE: o - CYCLE + args.horizon] for o in test_o])
    persistence = np.repeat(raw[test_o - 1][:, None], args.horizon, axis=1)
    score = lambda f: {"rmse": float(np.sqrt(np.mean((f - actual) ** 2))), "mae": float(np.mean(np.abs(f - actual)))}
    results = {"lstm": score(forecast), "seasonal naive (one cycle earlier)": score(seasonal),
               "persistence (last value)": score(persistence)}
    print(f"sunspots, {args.horizon}-month forecasts from {len(test_o)} test origins "
          f"({years[test_o[0]]}-{years[test_o[-1]]}), {args.impl} LSTM trained in {history['train_seconds']:.1f} s:")
    for name, e in results.items():
        print(f"  {name:36s} RMSE {e['rmse']:6.2f}  MAE {e['mae']:6.2f}")
    print(f"lowest RMSE: {min(results, key=lambda k: results[k]['rmse'])}")

    os.makedirs(args.out, exist_ok=True)
    save_plot(os.path.join(args.out, "timeseries_forecast.png"), raw, test_o, forecast, args.horizon)
    metrics = {"args": vars(args), "test": results, **history}
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics


def save_plot(path, raw, origins, forecast, horizon):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    span = np.arange(origins[0] - 60, origins[-1] + horizon)
    ax.plot(span, raw[span], color="black", linewidth=0.8, label="monthly sunspot number")
    for k, i in enumerate(range(0, len(origins), max(1, len(origins) // 8))):
        o = origins[i]
        ax.plot(np.arange(o, o + horizon), forecast[i], color="tab:orange", linewidth=1.5,
                label=f"{horizon}-month LSTM forecasts" if k == 0 else None)
    ax.set_xlabel("month index since 1749")
    ax.set_title("Sunspots: multi-step forecasts on the test period")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
