"""Rotary attention modules against a naive reference: explicit rotation matrices, explicit softmax loops."""

import math

import pytest
import torch

from poyocap.model.attention import RotaryCrossAttention, RotarySelfAttention, RotaryTime


def rotation_matrix(t: float, omega: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(e, e) rotation of the rotate-half convention: dims k and k + r/2 rotate by omega_k * t; the rest fixed."""
    n = len(omega)
    m = torch.eye(head_dim, dtype=torch.float64)
    for k in range(n):
        a = float(omega[k]) * t
        c, s = math.cos(a), math.sin(a)
        m[k, k], m[k, k + n], m[k + n, k], m[k + n, k + n] = c, -s, s, c
    return m


def naive_attention(q, k, v, tq, tk, omega, rotate_values, mask=None):  # noqa: ANN001, ANN201
    """q (Q, e), k / v (K, e), times tq (Q,), tk (K,) -> (Q, e), one head, float64 loops."""
    e = q.shape[-1]
    out = torch.zeros(q.shape[0], e, dtype=torch.float64)
    for i in range(q.shape[0]):
        ri = rotation_matrix(float(tq[i]), omega, e)
        qi = ri @ q[i].double()
        logits, values = [], []
        for j in range(k.shape[0]):
            rj = rotation_matrix(float(tk[j]), omega, e)
            logits.append(float(qi @ (rj @ k[j].double())) / math.sqrt(e) if mask is None or mask[j] else -math.inf)
            values.append(rj @ v[j].double() if rotate_values else v[j].double())
        w = torch.softmax(torch.tensor(logits, dtype=torch.float64), 0)
        acc = sum(w[j] * values[j] for j in range(len(values)))
        out[i] = ri.T @ acc if rotate_values else acc
    return out


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    return x.view(x.shape[0], h, -1).transpose(0, 1)  # (N, D) -> (H, N, e)


@pytest.mark.parametrize("rotate_values", [True, False])
def test_cross_attention_matches_naive_reference(rotate_values):
    torch.manual_seed(0)
    dim, heads, n_q, n_k = 16, 2, 3, 5
    attn = RotaryCrossAttention(dim, heads, rotate_values=rotate_values).double()
    rot = RotaryTime(dim // heads).double()
    x, ctx = torch.randn(1, n_q, dim, dtype=torch.float64), torch.randn(1, n_k, dim, dtype=torch.float64)
    tq, tk = torch.rand(1, n_q, dtype=torch.float64), torch.rand(1, n_k, dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True, False]])
    got = attn(x, ctx, q_rot=rot(tq), kv_rot=rot(tk), mask=mask)[0]
    with torch.no_grad():
        q = _heads(attn.to_q(attn.norm_q(x))[0], heads)
        k, v = (_heads(t, heads) for t in attn.to_kv(attn.norm_kv(ctx))[0].chunk(2, dim=-1))
        per_head = [naive_attention(q[h], k[h], v[h], tq[0], tk[0], rot.omega, rotate_values, mask[0])
                    for h in range(heads)]
        want = attn.out(torch.cat(per_head, dim=-1))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_self_attention_matches_naive_reference():
    torch.manual_seed(1)
    dim, heads, n = 16, 4, 6
    attn = RotarySelfAttention(dim, heads).double().eval()
    rot = RotaryTime(dim // heads).double()
    x, t = torch.randn(1, n, dim, dtype=torch.float64), torch.rand(1, n, dtype=torch.float64)
    got = attn(x, rotary=rot(t))[0]
    with torch.no_grad():
        q, k, v = (_heads(p, heads) for p in attn.qkv(attn.norm(x))[0].chunk(3, dim=-1))
        want = attn.out(torch.cat([naive_attention(q[h], k[h], v[h], t[0], t[0], rot.omega, True)
                                   for h in range(heads)], dim=-1))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_rotary_attention_depends_only_on_time_differences():
    """Shifting every query and key time by the same amount changes nothing (relative time encoding)."""
    torch.manual_seed(2)
    attn = RotaryCrossAttention(16, 2, rotate_values=True).double()
    rot = RotaryTime(8).double()
    x, ctx = torch.randn(2, 3, 16, dtype=torch.float64), torch.randn(2, 7, 16, dtype=torch.float64)
    tq, tk = torch.rand(2, 3, dtype=torch.float64), torch.rand(2, 7, dtype=torch.float64)
    a = attn(x, ctx, q_rot=rot(tq), kv_rot=rot(tk))
    b = attn(x, ctx, q_rot=rot(tq + 0.37), kv_rot=rot(tk + 0.37))
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_heads_must_divide_dim():
    with pytest.raises(ValueError, match="divisible"):
        RotaryCrossAttention(10, 3, rotate_values=False)
    with pytest.raises(ValueError, match="divisible"):
        RotarySelfAttention(10, 4)
