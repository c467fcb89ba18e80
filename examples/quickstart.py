"""The main job: initialize a torchvision and a timm model with the bundled GHN, offline.

    python examples/quickstart.py

No network is needed: the GHN ships inside the package (``ghn="bundled"``).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # prove that nothing is downloaded

import timm  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

import ghn_init  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    ghn = ghn_init.load_ghn("bundled")
    print(f"bundled GHN: {ghn.config.kind}, {ghn.num_parameters():,} parameters\n")
    for model in (torchvision.models.resnet50(), timm.create_model("convnext_tiny")):
        report = ghn_init.apply(model, ghn)
        print(report, end="\n\n")
        with torch.no_grad():
            logits = model.eval()(torch.randn(2, 3, 224, 224))
        print(f"  forward pass after init: logits {tuple(logits.shape)}, finite={bool(torch.isfinite(logits).all())}\n")


if __name__ == "__main__":
    main()
