"""The PyTorch peer of the SimCLR train step, for side-by-side timing.

  python benchmarks/torch_peer.py --depth 18 --width 0.25 --image_size 16 \
      --batch_size 256 --steps 5 [--cifar_stem] [--bf16] [--device cpu]

What a PyTorch user would write: torchvision's ResNet blocks (BasicBlock,
Bottleneck) stacked at our widths and stem, a projection head of Linear +
BatchNorm layers like ours, lightly's NTXentLoss, SGD with momentum, and
random tensors as the two views (no augmentation; ours augments on device,
which costs it under 5% of a step on CPU). Prints one JSON line with
first-step and steady-state times. Needs the `bench` extra (torch,
torchvision, lightly); the suite (benchmarks/suite.py) runs this in a
subprocess so each framework owns its thread pool.
"""

import argparse
import json
import statistics
import time

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet
from lightly.loss import NTXentLoss

BLOCKS = {
  18: (tv_resnet.BasicBlock, (2, 2, 2, 2)),
  34: (tv_resnet.BasicBlock, (3, 4, 6, 3)),
  50: (tv_resnet.Bottleneck, (3, 4, 6, 3)),
}


def resnet(depth: int, width: float, cifar_stem: bool) -> nn.Module:
  """A torchvision-block ResNet with our width multiplier and stems."""
  block, sizes = BLOCKS[depth]
  stem = int(64 * width)
  if cifar_stem:
    layers = [
      nn.Conv2d(3, stem, 3, 1, 1, bias=False),
      nn.BatchNorm2d(stem),
      nn.ReLU(inplace=True),
    ]
  else:
    layers = [
      nn.Conv2d(3, stem, 7, 2, 3, bias=False),
      nn.BatchNorm2d(stem),
      nn.ReLU(inplace=True),
      nn.MaxPool2d(3, 2, 1),
    ]
  inplanes = stem
  for stage, num in enumerate(sizes):
    planes = int(64 * 2**stage * width)
    for b in range(num):
      stride = 2 if stage > 0 and b == 0 else 1
      out = planes * block.expansion
      down = None
      if b == 0:  # like ours (and the reference): project every first block
        down = nn.Sequential(
          nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out)
        )
      layers.append(block(inplanes, planes, stride, down))
      inplanes = out
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
  net = nn.Sequential(*layers)
  net.feature_dim = inplanes
  return net


def head(dim: int, layers: int, out_dim: int = 128) -> nn.Module:
  """SimCLR projection head: [Linear -> BN (-> ReLU)] x layers."""
  mods = []
  for i in range(layers):
    last = i == layers - 1
    width = out_dim if last else dim
    mods += [nn.Linear(dim, width, bias=False), nn.BatchNorm1d(width)]
    if not last:
      mods.append(nn.ReLU(inplace=True))
  return nn.Sequential(*mods)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--depth", type=int, default=18, choices=sorted(BLOCKS))
  p.add_argument("--width", type=float, default=1.0)
  p.add_argument("--image_size", type=int, default=32)
  p.add_argument("--batch_size", type=int, default=128)
  p.add_argument("--head_layers", type=int, default=2)
  p.add_argument("--cifar_stem", action="store_true")
  p.add_argument("--bf16", action="store_true", help="autocast to bfloat16")
  p.add_argument(
    "--channels_last",
    action="store_true",
    help="NHWC memory format (faster on CPU; not the default)",
  )
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--device", default="cpu")
  p.add_argument("--threads", type=int, default=0, help="0: torch default")
  args = p.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  dev = torch.device(args.device)
  backbone = resnet(args.depth, args.width, args.cifar_stem)
  model = nn.Sequential(backbone, head(backbone.feature_dim, args.head_layers))
  fmt = torch.channels_last if args.channels_last else torch.contiguous_format
  model = model.to(dev).to(memory_format=fmt)
  opt = torch.optim.SGD(
    model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-6
  )
  loss_fn = NTXentLoss(temperature=0.2)
  shape = (args.batch_size, 3, args.image_size, args.image_size)
  x0 = torch.rand(shape, device=dev).to(memory_format=fmt)
  x1 = torch.rand(shape, device=dev).to(memory_format=fmt)

  def step() -> torch.Tensor:
    with torch.autocast(dev.type, torch.bfloat16, enabled=args.bf16):
      z = model(torch.cat([x0, x1]))
      loss = loss_fn(*z.float().chunk(2))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  def sync() -> None:
    if dev.type == "cuda":
      torch.cuda.synchronize()

  t0 = time.perf_counter()
  step().item()
  sync()
  first = time.perf_counter() - t0
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    loss = step().item()
    sync()
    times.append(time.perf_counter() - t0)
  per_step = statistics.median(times)
  print(
    json.dumps(
      {
        "framework": "pytorch",
        "torch": torch.__version__,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "channels_last": args.channels_last,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "first_step_s": first,
        "step_s": per_step,
        "step_s_min": min(times),
        "images_per_s": args.batch_size / per_step,
        "views_per_s": 2 * args.batch_size / per_step,
        "loss": loss,
      }
    )
  )


if __name__ == "__main__":
  main()
