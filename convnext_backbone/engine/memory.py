"""How a CPU run keeps the memory it frees (the tools' inference and the benchmark use it)."""


def keep_freed_memory() -> bool:
    """Keep memory that torch frees mapped in this process (glibc's malloc), as
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` would; False (nothing changed) where the C
    library is not glibc. The process then keeps its peak memory instead of returning it.

    glibc serves a block above its mmap threshold (128 kB, rising to at most 32 MB as such
    blocks are freed) by a fresh mmap and unmaps it when freed, and returns free memory at the
    heap's top to the OS: then an activation of the next forward may be fresh memory, whose pages
    fault in on first write, a pass over memory that the matmuls do not need (CPU inference of
    ConvNeXt-T at 800x1216: 1.29x its matmul floor without, 1.16x with; docs/speed.md).
    """
    import ctypes
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except AttributeError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    return bool(mallopt(m_mmap_max, 0) and mallopt(m_trim_threshold, 2**31 - 1))
