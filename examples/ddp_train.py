"""Data-parallel training of a FusedLSTM forecaster with torchrun (CPU, gloo).

One machine, 2 processes:
    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py
Two machines (run on each, NODE_RANK 0 and 1; HOST is node 0's address):
    torchrun --nnodes=2 --node_rank=$NODE_RANK --nproc_per_node=2 \\
        --rdzv_backend=c10d --rdzv_endpoint=$HOST:29500 examples/ddp_train.py
The data here is a noisy sine wave, so the script runs anywhere; each process trains on its
own shard of every batch and DDP averages the gradients.
"""
import argparse
import math
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from fused_lstm import FusedLSTM


class Forecaster(nn.Module):
    def __init__(self, hidden: int = 50):
        super().__init__()
        self.lstm = FusedLSTM(1, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0][:, -1])


def sine_windows(n: int = 4096, window: int = 50) -> TensorDataset:
    t = torch.arange(n + window + 1, dtype=torch.float32)
    series = torch.sin(2 * math.pi * t / 64) + 0.1 * torch.randn(len(t), generator=torch.Generator().manual_seed(0))
    x = series.unfold(0, window, 1)[:n].unsqueeze(-1)
    y = series[window:window + n].unsqueeze(-1)
    return TensorDataset(x, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    args = parser.parse_args()

    dist.init_process_group("gloo")  # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR, ...
    rank = dist.get_rank()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    torch.manual_seed(0)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    model = nn.parallel.DistributedDataParallel(Forecaster())
    dataset = sine_windows()
    sampler = DistributedSampler(dataset, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        total, count = 0.0, 0
        for x, y in loader:
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(x), count + len(x)
        mean = torch.tensor([total, count])
        dist.all_reduce(mean)
        if rank == 0:
            print(f"epoch {epoch + 1}: train MSE {mean[0].item() / mean[1].item():.4f}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
