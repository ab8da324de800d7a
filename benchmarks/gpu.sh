#!/usr/bin/env bash
# One CUDA device, within about 5 minutes: the benchmark suite, then ResNet-50 at 224x224 with AMP (fp16),
# reporting images/s and the fraction of the device's peak FLOP/s. Usage: bash benchmarks/gpu.sh [PEAK_TFLOPS]
set -euo pipefail
cd "$(dirname "$0")/.."
peak_tflops="${1:-989}"  # dense fp16/bf16 tensor-core peak; 989 for an H100 SXM
python benchmarks/run.py --quick --out "${OUT:-bench-out}"
python - "$peak_tflops" <<'PY'
import json, sys, time
import torch
from cnnkit.models import get_model
from cnnkit.models.stats import count_macs
assert torch.cuda.is_available(), "benchmarks/gpu.sh needs a CUDA device"
peak = float(sys.argv[1]) * 1e12
model = get_model("resnet50").cuda().to(memory_format=torch.channels_last)
macs = count_macs(get_model("resnet50").to("meta"), (3, 224, 224))
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
scaler = torch.amp.GradScaler("cuda")
x = torch.randn(256, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 1000, (256,), device="cuda")
def step():
    with torch.autocast("cuda", dtype=torch.float16):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
for _ in range(5):
    step()
torch.cuda.synchronize()
start, steps = time.perf_counter(), 20
for _ in range(steps):
    step()
torch.cuda.synchronize()
seconds = (time.perf_counter() - start) / steps
images = 256 / seconds
flops = 3 * 2 * macs * images  # forward + backward ~ 3x forward; 2 FLOPs per multiply-add
print(json.dumps({"benchmark": "resnet50_amp_train", "device": torch.cuda.get_device_name(0), "batch": 256,
                  "images_per_s": round(images, 1), "tflops": round(flops / 1e12, 1),
                  "fraction_of_peak": round(flops / peak, 3)}))
PY
