"""executor.heap: with the heap kept, a training step does not page-fault its tensors in again."""
import subprocess
import sys

import pytest

from executor.heap import keep_heap

# three warm-up steps of ResNet-20 at batch 16 (forward with the loss, backward), then the minor page faults
# of the next three: the pattern of allocations and frees of a real step
_PROBE = """
import resource, sys, torch, torch.nn.functional as F
if sys.argv[1] == "kept":
    from executor.heap import keep_heap
    assert keep_heap() is not None
from executor.models import build_model
torch.set_num_threads(1)
torch.manual_seed(0)
model = build_model("resnet20", num_classes=10)
x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
def step():
    model.zero_grad(set_to_none=False)
    F.cross_entropy(model(x), y).backward()
for _ in range(3):
    step()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_keep_heap_reports_glibc_settings():
    got = keep_heap()
    if got is None:
        pytest.skip("the C library has no mallopt (not glibc)")
    assert got == {"mmap_threshold": 32 << 20, "trim_threshold": 2**31 - 1, "top_pad": 64 << 20, "mmap_max": 0}


def test_kept_heap_does_not_fault_a_steps_tensors_in_again():
    if keep_heap() is None:
        pytest.skip("the C library has no mallopt (not glibc)")
    default, kept = _faults("default"), _faults("kept")
    # ResNet-20's first activation at batch 16 is 1 MiB (16 x 16 x 32 x 32 floats): glibc's defaults map
    # blocks that size afresh
    assert default > 1000, default
    # kept: 0-1.3k over the three steps in ten runs here (the heap's occasional growth), defaults 8k-12k
    assert kept < default // 4, (kept, default)
