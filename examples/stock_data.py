"""Price history -> windows of past log returns, split by time with no look-ahead.

Daily prices of a stock span orders of magnitude (Microsoft's split-adjusted close goes from
$0.07 in 1986 to $84 in 2017), so the model does not see prices: it sees the log returns of
the last `window` days, standardized with statistics of the training period only, and
predicts the next day's log return. A prediction becomes a price as
`price_today * exp(predicted return)`.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd


def load_prices(csv: Optional[str] = None, date_column: str = "Date", column: str = "Close") -> pd.Series:
    """Prices indexed by date, oldest first: a CSV of the user's, or the Microsoft daily
    history that ships inside the pmdarima package (1986-03-13 to 2017-11-10)."""
    if csv is None:
        from pmdarima.datasets import load_msft

        frame = load_msft()
    else:
        frame = pd.read_csv(csv)
    for name in (date_column, column):
        if name not in frame.columns:
            raise ValueError(f"column {name!r} not in the data; columns are {list(frame.columns)}")
    prices = pd.Series(frame[column].to_numpy(dtype=np.float64), index=pd.to_datetime(frame[date_column]))
    prices = prices.sort_index().dropna()
    if (prices <= 0).any():
        raise ValueError(f"column {column!r} must hold positive prices")
    return prices


@dataclass
class Split:
    """Windows of one period. x: (n, window, 1) standardized log returns; y: (n,) the next
    day's standardized log return; last_price: the price on the window's last day; price:
    the true next-day price; dates: the date of the predicted day."""
    x: np.ndarray
    y: np.ndarray
    last_price: np.ndarray
    price: np.ndarray
    dates: pd.DatetimeIndex


@dataclass
class Dataset:
    train: Split
    val: Split
    test: Split
    mean: float  # of training-period log returns
    std: float

    def to_price(self, split: Split, y: np.ndarray) -> np.ndarray:
        """Standardized predicted returns -> predicted prices."""
        return split.last_price * np.exp(y * self.std + self.mean)


def make_dataset(prices: pd.Series, window: int = 50, val_fraction: float = 0.15,
                 test_fraction: float = 0.15) -> Dataset:
    """Chronological split by the date each window predicts: the first 70% of days train,
    the next 15% validate, the last 15% test. A window's inputs are the days before its
    target, so validation and test windows may look back into earlier periods (that is
    the past, known at prediction time) but no training target is later than a
    validation target, and none of those later than a test target. The standardization
    uses training-period returns only."""
    returns = np.diff(np.log(prices.to_numpy()))  # returns[i]: day i -> day i + 1
    n = len(returns) - window  # windows: returns[i : i + window] -> returns[i + window]
    if n < 20:
        raise ValueError(f"need more than {window + 20} prices for window={window}, got {len(prices)}")
    n_test, n_val = int(n * test_fraction), int(n * val_fraction)
    n_train = n - n_val - n_test
    train_returns = returns[: n_train + window]  # every return a training window touches
    mean, std = float(train_returns.mean()), float(train_returns.std())
    scaled = (returns - mean) / std
    values = prices.to_numpy()

    def split(lo: int, hi: int) -> Split:
        idx = np.arange(lo, hi)
        x = np.stack([scaled[i: i + window] for i in idx])[..., None].astype(np.float32)
        return Split(x=x, y=scaled[idx + window].astype(np.float32),
                     last_price=values[idx + window], price=values[idx + window + 1],
                     dates=prices.index[idx + window + 1])

    return Dataset(split(0, n_train), split(n_train, n_train + n_val), split(n_train + n_val, n),
                   mean, std)
