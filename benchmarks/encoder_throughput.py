"""Encoder throughput: poyocap's CalciumEncoder vs torch_brain's CalciumPOYOPlus at matched size.

Prints samples/s of forward + backward + AdamW for both, the ratio, and the FLOP/s each achieves
(FLOPs counted by torch.utils.flop_counter on one step). Run:

    .venv/bin/python benchmarks/encoder_throughput.py [--device cpu|cuda] [--dim 64 --depth 2 ...]

Sizes default to the demo preset (dim 64, depth 2, 2 cross / 4 self heads, 16 latents per 1 s window,
30 frames x 64 ROIs = 1920 tokens, batch 32). torch_brain uses one head size for both attentions; we give it
dim_head = dim / self_heads, and by default give ours the same cross-attention head size (``--cross-dim-head``,
matched widths); ``--cross-dim-head 0`` keeps ours as wide as the model (the presets' default: 2 heads of dim / 2),
which makes its cross-attention wider than torch_brain's.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from poyocap.config import EncoderConfig
from poyocap.model.encoder import CalciumEncoder


def make_batch(b: int, n_frames: int, n_units: int, vocab: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    units = torch.stack([torch.randperm(vocab, generator=g)[:n_units] for _ in range(b)])
    return {
        "values": torch.randn(b, n_frames, n_units, generator=g).to(device),
        "unit_index": units.to(device),
        "times": (torch.arange(n_frames, dtype=torch.float32) / 30.0)[None].expand(b, -1).contiguous().to(device),
        "mask": torch.ones(b, n_frames, n_units, dtype=torch.bool, device=device),
        "window_s": torch.full((b,), n_frames / 30.0, device=device),
    }


class OursWithHead(torch.nn.Module):
    def __init__(self, cfg: EncoderConfig, vocab: int, path: str = "grid") -> None:
        super().__init__()
        self.encoder = CalciumEncoder(replace(cfg, cross_attention=path), vocab)
        self.head = torch.nn.Linear(cfg.dim, 8)

    def forward(self, batch):  # noqa: ANN001, ANN201
        _, z_l, _ = self.encoder(batch)
        return self.head(z_l.mean(1)).float().pow(2).mean()


class TorchBrainWithLoss(torch.nn.Module):
    def __init__(self, cfg: EncoderConfig, vocab: int, window_s: float) -> None:
        super().__init__()
        from torch_brain.models import CalciumPOYOPlus

        self.model = CalciumPOYOPlus(
            sequence_length=window_s, latent_step=cfg.latent_step_s, num_latents_per_step=cfg.latents_per_step,
            dim=cfg.dim, depth=cfg.depth, dim_head=cfg.dim // cfg.self_heads, cross_heads=cfg.cross_heads,
            self_heads=cfg.self_heads, ffn_dropout=cfg.dropout, lin_dropout=cfg.dropout, atn_dropout=0.0,
        )
        self.model.unit_emb.initialize_vocab([f"u{i}" for i in range(vocab)])
        self.model.session_emb.initialize_vocab(["s0"])
        self.window_s = window_s

    def forward(self, batch):  # noqa: ANN001, ANN201
        b, n_t, n_u = batch["values"].shape
        dev = batch["values"].device
        n_steps = int(round(self.window_s / self.model.latent_step))
        lat_idx = torch.arange(self.model.num_latents_per_step, device=dev).repeat(n_steps)
        lat_t = ((torch.arange(n_steps, device=dev) + 0.5) * self.model.latent_step).repeat_interleave(
            self.model.num_latents_per_step)
        out = self.model(
            input_unit_index=batch["unit_index"][:, None, :].expand(b, n_t, n_u).reshape(b, -1),
            input_timestamps=batch["times"][:, :, None].expand(b, n_t, n_u).reshape(b, -1),
            input_values=batch["values"].reshape(b, -1, 1),
            input_mask=batch["mask"].reshape(b, -1),
            latent_index=lat_idx[None].expand(b, -1), latent_timestamps=lat_t[None].expand(b, -1),
            output_session_index=torch.zeros(b, 1, dtype=torch.long, device=dev),
            output_timestamps=torch.full((b, 1), self.window_s / 2, device=dev),
            output_decoder_index=torch.ones(b, 1, dtype=torch.long, device=dev),
        )
        vals = [v for v in (out.values() if isinstance(out, dict) else out[0].values()) if v.numel()]
        return sum(v.float().pow(2).mean() for v in vals)


def bench(model: torch.nn.Module, batch: dict, steps: int, device: torch.device, amp: bool) -> tuple[float, float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else (lambda: torch.autocast("cpu", enabled=False))

    def step() -> None:
        with ctx():
            loss = model(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops()
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    return dt, flops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--cross-heads", type=int, default=2)
    p.add_argument("--self-heads", type=int, default=4)
    p.add_argument("--latents-per-step", type=int, default=4)
    p.add_argument("--latent-step", type=float, default=0.25)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--units", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--cross-dim-head", type=int, default=-1,
                   help="our cross-attention head size (-1: dim / self_heads, torch_brain's here; 0: dim / cross_heads)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd versions of both models")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp = device.type == "cuda" and not args.no_amp
    cfg = EncoderConfig(dim=args.dim, depth=args.depth, cross_heads=args.cross_heads, self_heads=args.self_heads,
                        latents_per_step=args.latents_per_step, latent_step_s=args.latent_step, dropout=0.1,
                        cross_dim_head=args.dim // args.self_heads if args.cross_dim_head < 0 else args.cross_dim_head)
    vocab = max(1000, args.units * 4)
    batch = make_batch(args.batch, args.frames, args.units, vocab, device)
    window_s = args.frames / 30.0
    torch.manual_seed(0)
    rows = []
    models = [("poyocap CalciumEncoder [grid]", OursWithHead(cfg, vocab, "grid")),
              ("torch_brain CalciumPOYOPlus", TorchBrainWithLoss(cfg, vocab, window_s)),
              ("poyocap CalciumEncoder [tokens]", OursWithHead(cfg, vocab, "tokens")),
              ("poyocap CalciumEncoder [kv]", OursWithHead(cfg, vocab, "kv"))]
    for name, model in models:
        model.to(device).train()
        dt, flops = bench(model, batch, args.steps, device, amp)
        rows.append((name, args.batch / dt, dt, flops / dt / 1e9, flops / 1e9))
    if args.compile:
        for name, model in [models[i] for i in (0, 1, 3)]:
            t0 = time.perf_counter()
            compiled = torch.compile(model)
            bench(compiled, batch, 1, device, amp)  # compile (not timed below)
            print(f"[compile {name}: {time.perf_counter() - t0:.0f} s]")
            dt, _ = bench(compiled, batch, args.steps, device, amp)
            flops = rows[[m for m, _ in models].index(name)][4] * 1e9
            rows.append((name + " (compiled)", args.batch / dt, dt, flops / dt / 1e9, flops / 1e9))
    print(f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'})"
          f" amp_bf16={amp} dim={args.dim} depth={args.depth} heads={args.cross_heads}/{args.self_heads}"
          f" latents={args.latents_per_step * int(round(window_s / args.latent_step))} tokens={args.frames}x{args.units}"
          f" cross width ours {cfg.cross_heads * (cfg.cross_dim_head or cfg.dim // cfg.cross_heads)}"
          f" / torch_brain {cfg.cross_heads * (cfg.dim // cfg.self_heads)}"
          f" batch={args.batch}")
    print(f"{'model':42s} {'samples/s':>10s} {'s/step':>8s} {'GFLOP/s':>9s} {'GFLOP/step':>10s}")
    for name, sps, dt, gfs, gf in rows:
        print(f"{name:42s} {sps:10.1f} {dt:8.4f} {gfs:9.1f} {gf:10.2f}")
    tb = rows[1][1]
    print(f"ratio poyocap [grid] / torch_brain: {rows[0][1] / tb:.2f}x; "
          f"poyocap [tokens] / torch_brain: {rows[2][1] / tb:.2f}x; poyocap [kv] / torch_brain: {rows[3][1] / tb:.2f}x")
    if len(rows) == 7:
        print(f"compiled, ratio to compiled torch_brain: poyocap [grid] {rows[4][1] / rows[5][1]:.2f}x, "
              f"poyocap [kv] {rows[6][1] / rows[5][1]:.2f}x")


if __name__ == "__main__":
    main()
