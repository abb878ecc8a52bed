#!/usr/bin/env python3
"""Average page-cache folio size of a file, in 4 KiB pages (root only).

Used by the read benchmark to show why a warm re-read through FUSE costs more than on ext4: it maps
the file, reads its pages' frame numbers from /proc/self/pagemap, and counts folio heads, tails and
single pages in /proc/kpageflags. Prints one JSON object. Pages should already be in the page cache:
touching a missing one reads it in.
"""
import json
import mmap
import os
import struct
import sys

PAGE = 4096
KPF_COMPOUND_HEAD = 1 << 15
KPF_COMPOUND_TAIL = 1 << 16
PFN_MASK = (1 << 55) - 1
PRESENT = 1 << 63


def main(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    pages = size // PAGE
    if pages == 0:
        raise SystemExit(f"{path}: smaller than one page")
    m = mmap.mmap(fd, pages * PAGE, prot=mmap.PROT_READ)
    for i in range(pages):
        m[i * PAGE]  # map every page into this process
    start = next(int(line.split("-")[0], 16) for line in open("/proc/self/maps") if line.rstrip().endswith(path))
    counts = {"single": 0, "head": 0, "tail": 0, "absent": 0}
    with open("/proc/self/pagemap", "rb") as pm, open("/proc/kpageflags", "rb") as kf:
        pm.seek((start // PAGE) * 8)
        entries = struct.unpack(f"<{pages}Q", pm.read(pages * 8))
        for e in entries:
            if not e & PRESENT:
                counts["absent"] += 1
                continue
            kf.seek((e & PFN_MASK) * 8)
            flags = struct.unpack("<Q", kf.read(8))[0]
            key = "head" if flags & KPF_COMPOUND_HEAD else "tail" if flags & KPF_COMPOUND_TAIL else "single"
            counts[key] += 1
    folios = counts["head"] + counts["single"]
    counts["pages"] = pages
    counts["avg_pages_per_folio"] = round((pages - counts["absent"]) / folios, 1) if folios else 0
    print(json.dumps(counts))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: folio-sizes.py FILE")
    main(os.path.abspath(sys.argv[1]))
