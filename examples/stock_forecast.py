"""Next-day stock price forecasting with the classic stacked LSTM, on real prices.

    python examples/stock_forecast.py                          # Microsoft 1986-2017, bundled
    python examples/stock_forecast.py --csv prices.csv --date-column Date --column Close
    python examples/stock_forecast.py --impl torch             # the same model on nn.LSTM
    python examples/stock_forecast.py --impl both              # both, with both wall times

Model: LSTM(hidden 50, full sequence out) -> LSTM(hidden 50) -> Linear(1), Adam on MSE, 20
epochs of batches of 32, on windows of the last 50 daily log returns (see stock_data.py);
the weights with the best validation loss are kept. Reports test RMSE and MAE in price
units against two baselines: tomorrow = today, and a linear model on the same window.
Writes metrics.json and a plot of predicted vs actual prices (of the last model) to --out.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stock_data import Dataset, load_prices, make_dataset  # noqa: E402

from fused_lstm import FusedLSTM  # noqa: E402


class StackedForecaster(nn.Module):
    def __init__(self, lstm_cls, features: int = 1, hidden: int = 50):
        super().__init__()
        self.lstm1 = lstm_cls(features, hidden, batch_first=True)  # full sequence out
        self.lstm2 = lstm_cls(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence, _ = self.lstm1(x)
        _, (h_n, _) = self.lstm2(sequence)
        return self.head(h_n[-1]).squeeze(-1)


def predict(model: nn.Module, x: np.ndarray, device: str, batch: int = 1024) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = [model(torch.from_numpy(x[i: i + batch]).to(device)).cpu() for i in range(0, len(x), batch)]
    return torch.cat(out).numpy()


def mse(model: nn.Module, x: np.ndarray, y: np.ndarray, device: str) -> float:
    return float(np.mean((predict(model, x, device) - y) ** 2))


def train(model: nn.Module, data: Dataset, args) -> dict:
    """Adam on MSE; keeps the weights of the epoch with the lowest validation loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    x = torch.from_numpy(data.train.x).to(args.device)
    y = torch.from_numpy(data.train.y).to(args.device)
    generator = torch.Generator().manual_seed(args.seed)
    history = {"train_loss_before": mse(model, data.train.x, data.train.y, args.device),
               "train_loss": [], "val_loss": []}
    best, best_state = float("inf"), None
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        bar = tqdm(range(0, len(x), args.batch_size), desc=f"epoch {epoch + 1}/{args.epochs}",
                   leave=False, disable=args.quiet)
        total = 0.0
        for i in bar:
            idx = order[i: i + args.batch_size]
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        val = mse(model, data.val.x, data.val.y, args.device)
        history["train_loss"].append(total / len(x))  # the running mean over the epoch
        history["train_loss_after"] = mse(model, data.train.x, data.train.y, args.device)
        history["val_loss"].append(val)
        if not args.quiet:
            print(f"epoch {epoch + 1:2d}: train MSE {total / len(x):.4f}  val MSE {val:.4f}")
        if val < best:
            best, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
    history["train_seconds"] = time.perf_counter() - start
    model.load_state_dict(best_state)
    return history


def linear_baseline(data: Dataset) -> np.ndarray:
    """Least squares on the same standardized window (plus an intercept), fit on train."""
    design = lambda s: np.hstack([s.x[..., 0], np.ones((len(s.x), 1), np.float32)])
    coef, *_ = np.linalg.lstsq(design(data.train), data.train.y, rcond=None)
    return design(data.test) @ coef


def errors(pred: np.ndarray, true: np.ndarray) -> dict:
    return {"rmse": float(np.sqrt(np.mean((pred - true) ** 2))), "mae": float(np.mean(np.abs(pred - true)))}


def save_plot(path: str, dates, actual: np.ndarray, predicted: np.ndarray, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(dates, actual, label="actual close", linewidth=1.2)
    ax.plot(dates, predicted, label="LSTM next-day forecast", linewidth=1.0, alpha=0.8)
    ax.set_title(f"{label}: next-day forecast on the test period")
    ax.set_ylabel("price")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", default=None, help="a CSV of prices (default: bundled MSFT history)")
    p.add_argument("--date-column", default="Date")
    p.add_argument("--column", default="Close", help="the price column to forecast")
    p.add_argument("--window", type=int, default=50, help="days of history per prediction")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--impl", choices=["fused", "torch", "both"], default="fused",
                   help="FusedLSTM, torch.nn.LSTM (same model otherwise), or both one after the other")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--last", type=int, default=None, help="use only the last N prices (quick runs)")
    p.add_argument("--out", default="out/stock", help="directory for metrics.json and the plot")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    prices = load_prices(args.csv, args.date_column, args.column)
    if args.last:
        prices = prices.iloc[-args.last:]
    data = make_dataset(prices, args.window)
    label = os.path.basename(args.csv) if args.csv else "MSFT"
    print(f"{label} {args.column}: {len(prices)} days {prices.index[0].date()} -> {prices.index[-1].date()}; "
          f"windows train {len(data.train.y)}, val {len(data.val.y)}, test {len(data.test.y)} "
          f"(test from {data.test.dates[0].date()})")

    impls = ["fused", "torch"] if args.impl == "both" else [args.impl]
    seconds = {}
    for impl in impls:  # the same seed, so both start from the same weights
        torch.manual_seed(args.seed)
        model = StackedForecaster(FusedLSTM if impl == "fused" else nn.LSTM, hidden=args.hidden).to(args.device)
        history = train(model, data, args)
        seconds[impl] = history["train_seconds"]
        predicted = data.to_price(data.test, predict(model, data.test.x, args.device))
        results = {
            "lstm": errors(predicted, data.test.price),
            "naive (tomorrow = today)": errors(data.test.last_price, data.test.price),
            "linear on the window": errors(data.to_price(data.test, linear_baseline(data)), data.test.price),
        }
        print(f"\ntest period, {len(data.test.y)} days, errors in price units ({impl} LSTM trained in "
              f"{history['train_seconds']:.1f} s):")
        for name, e in results.items():
            print(f"  {name:26s} RMSE {e['rmse']:.4f}  MAE {e['mae']:.4f}")
        best = min(results, key=lambda k: results[k]["rmse"])
        gain = 1 - results["lstm"]["rmse"] / results["naive (tomorrow = today)"]["rmse"]
        print(f"lowest RMSE: {best}; the LSTM's RMSE is {100 * gain:+.2f}% below tomorrow = today "
              "(next-day prices are close to a random walk: expect a small margin either way)")
    if len(seconds) == 2:
        print(f"training wall time: FusedLSTM {seconds['fused']:.1f} s, nn.LSTM {seconds['torch']:.1f} s "
              f"({seconds['torch'] / seconds['fused']:.2f}x)")

    os.makedirs(args.out, exist_ok=True)
    save_plot(os.path.join(args.out, "stock_forecast.png"), data.test.dates, data.test.price, predicted, label)
    metrics = {"args": vars(args), "test": results, "best": best, "train_seconds_by_impl": seconds, **history}
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"wrote {args.out}/metrics.json and {args.out}/stock_forecast.png")
    return metrics


if __name__ == "__main__":
    main()
