"""The side-by-side benchmark of ``tools/benchmark.py``: this package's ConvNeXt against timm's
and mmpretrain's, on the same arch, weights and input.

Its parts, each importable and testable alone:

* ``peers``: building our backbone and its peers with the same weights (through the
  checkpoint converters), and how far their outputs are from ours;
* ``floor``: the matmul floor (our backbone's pointwise-linear products alone, at the case's
  shapes) and the machine's matrix-product peak;
* ``measure``: the timed steps of a case (eager and compiled peers and the floor, interleaved),
  FLOP counting, the peak activation memory of a train step;
* ``profile``: where our forward's time above the matmul floor goes, operator by operator,
  per stage (``--profile``);
* ``report``: the Markdown table and the JSON file of the results;
* ``run``: the command line's options and ``main``, which runs the cases and writes the report.

Needs torch, timm and mmengine; mmpretrain (which needs mmcv) is benchmarked when importable.
"""
from .run import main, parse_args
