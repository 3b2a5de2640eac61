"""The CUDA-only code paths of the paper profile, in one short run (scripts/gpu_check.sh).

For each of the paper's six encoders (random init: the GPU machine may be offline): a
multimodal PhyllodesNet at 224 px, channels-last, a few AdamW steps under bf16 autocast on a
pinned, non-blocking batch, and an inference pass through the one prediction loop; then one
encoder compiled with torch.compile. Prints images/s per encoder and fails on a non-finite
loss or prediction. The CPU dry run of the whole paper profile is tests/test_paper_profile.py.
"""

from __future__ import annotations

import sys
import time

import torch

from phyllodes.models.network import PhyllodesNet, predict_proba
from phyllodes.profiles import get_profile


def main() -> int:
    assert torch.cuda.is_available(), "gpu_paths.py needs a CUDA GPU"
    paper = get_profile("paper")
    dev, size, bs = "cuda", paper.image_size, paper.batch_size
    for name in paper.encoders:
        net = PhyllodesNet.from_settings("multimodal", name, paper.fusion, 8,
                                         paper.to_dict(), pretrained=False).to(dev)
        net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        x = torch.rand(bs, 1, size, size).pin_memory()
        c, y = torch.randn(bs, 8).pin_memory(), torch.randint(0, 2, (bs,)).float()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(5):
            xb = x.to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                fused, ai, ac = net.forward_parts(xb, c.to(dev, non_blocking=True))
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    fused.float(), y.to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        rate = 5 * bs / (time.perf_counter() - t0)
        p = predict_proba(net, x[:8], c[:8], 8, torch.bfloat16)
        assert torch.isfinite(loss) and (p == p).all(), name
        print(f"{name:<32} bf16 train {rate:8.1f} images/s  loss {float(loss):.3f}")
    net = PhyllodesNet.from_settings("multimodal", "resnet18", "concat", 8,
                                     {**paper.to_dict(), "frozen_bn": False}, False).to(dev)
    fwd = torch.compile(net.forward_parts)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = fwd(torch.rand(bs, 1, size, size, device=dev), torch.randn(bs, 8, device=dev))
    assert torch.isfinite(out[0].float()).all()
    print("torch.compile (resnet18, bf16): ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
