"""CUDA path check (run on a GPU machine): grid attention == naive tokens on the GPU, bf16 autocast training
through the shared loop, and step time. Prints one line per check.

    python benchmarks/cuda_check.py
"""

from __future__ import annotations

import time

import torch

from poyocap.config import EncoderConfig, OptimConfig, PretrainConfig
from poyocap.model.encoder import CalciumEncoder
from poyocap.model.pretrain import TwinMaskedPretrainer
from poyocap.train import train


def batch(b: int, n_t: int, n_u: int, vocab: int, seed: int, device: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, n_t, n_u, dtype=torch.bool)
    for i in range(b):
        mask[i, :, n_u - (i % 5):] = False
    out = {"values": torch.randn(b, n_t, n_u, generator=g), "unit_index": torch.randint(0, vocab, (b, n_u), generator=g),
           "times": (torch.arange(n_t) / 30.0)[None].expand(b, -1).contiguous(), "mask": mask,
           "window_s": torch.full((b,), n_t / 30.0), "direction": torch.randint(-1, 8, (b,), generator=g)}
    return {k: v.to(device) for k, v in out.items()}


class Items(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.items = [{k: v[0].cpu() for k, v in batch(1, 30, 64, 500, i, "cpu").items()} for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device"
    dev = "cuda"
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    cfg = EncoderConfig(dim=64, depth=2, cross_heads=2, self_heads=4, latents_per_step=4, latent_step_s=0.25,
                        dropout=0.0)
    torch.manual_seed(0)
    enc = CalciumEncoder(cfg, 500).to(dev).eval()
    b = batch(8, 30, 64, 500, 0, dev)
    with torch.no_grad():
        z, _ = enc.encode(b)
        z_ref, _ = enc.encode(b, reference=True)
        print(f"grid vs naive tokens, fp32 on GPU: max |diff| = {(z - z_ref).abs().max().item():.2e}")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            zb, _ = enc.encode(b)
        print(f"bf16 autocast vs fp32: max |diff| = {(zb.float() - z).abs().max().item():.2e}, dtype {zb.dtype}")
    torch.manual_seed(0)
    task = TwinMaskedPretrainer(CalciumEncoder(cfg, 500), PretrainConfig())
    settings = OptimConfig(steps=60, batch_size=32, lr=1e-3, warmup_steps=5)
    t0 = time.perf_counter()
    res = train(task, Items(256), settings, seed=0, device=dev, progress=False)
    dt = time.perf_counter() - t0
    h = res.history[res.history["kind"] == "train"]
    print(f"train() on cuda with bf16 autocast: 60 steps in {dt:.1f} s; recon {h['recon'].iloc[0]:.3f} -> "
          f"{h['recon'].iloc[-1]:.3f}; finite {bool(h['loss'].notna().all())}; "
          f"params on {next(res.objective.parameters()).device}")


if __name__ == "__main__":
    main()
