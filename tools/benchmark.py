"""Side-by-side backbone benchmark: this package's ConvNeXt against timm's and mmpretrain's.

    python tools/benchmark.py [--archs tiny base] [--sizes 512x512 800x1216] [--batches 1 2]
        [--modes eval train] [--precisions fp32 bf16 fp16]
        [--memory-formats contiguous channels_last] [--compile] [--keep-freed-memory]
        [--repeats 5] [--warmup 2] [--memory] [--out benchmarks/]

Every peer gets the same arch, the same weights and the same input, and the peers run
interleaved. Reported (``results.md``, ``results.json`` in ``--out``): median and spread of the
repeats, the ratio to the fastest peer and to the matmul floor (our backbone's pointwise-linear
products alone), achieved GFLOP/s and the fraction of the machine's matrix-product peak; with
``--compile`` compiled peers and their compile time, with ``--memory`` the activation memory of
a train step with and without ``with_cp``. The method, part by part: ``convnext_backbone.
benchmark`` (``peers``, ``floor``, ``measure``, ``report``, ``run``).
Needs torch, timm and mmengine; mmpretrain (which needs mmcv) is benchmarked when importable.
"""
import os
import sys

# NOTE: read before torch is imported, so before the package: torch's inductor writes its
# default cache folder into this variable when anything asks for it (importing timm does), and
# --compile measures with an empty one unless the user chose a folder.
INDUCTOR_CACHE_CHOSEN = 'TORCHINDUCTOR_CACHE_DIR' in os.environ

from convnext_backbone.benchmark import main  # noqa: E402  (after the variable is read)

if __name__ == '__main__':
    sys.exit(main(inductor_cache_chosen=INDUCTOR_CACHE_CHOSEN) and 0)
