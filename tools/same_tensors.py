#!/usr/bin/env python3
"""Compare two safetensors files tensor by tensor, byte for byte (and their metadata), with no dependency
beyond the standard library. Exit 0 when every tensor is bit-identical, 1 otherwise (naming the first
differing tensors and elements). Used by tools/bitident.sh.

    python3 tools/same_tensors.py A.safetensors B.safetensors
"""
import json
import struct
import sys


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    body = data[8 + n :]
    tensors = {
        name: (t["dtype"], t["shape"], body[t["data_offsets"][0] : t["data_offsets"][1]])
        for name, t in header.items()
    }
    return tensors, meta


def main(a, b):
    ta, ma = read(a)
    tb, mb = read(b)
    problems = []
    if sorted(ta) != sorted(tb):
        problems.append(f"tensor names differ: {sorted(set(ta) ^ set(tb))}")
    for name in sorted(set(ta) & set(tb)):
        (da, sa, ba), (db, sb, bb) = ta[name], tb[name]
        if (da, sa) != (db, sb):
            problems.append(f"{name}: {da}{sa} vs {db}{sb}")
        elif ba != bb:
            fa = struct.unpack(f"<{len(ba) // 4}f", ba)
            fb = struct.unpack(f"<{len(bb) // 4}f", bb)
            diff = [i for i in range(len(fa)) if struct.pack("<f", fa[i]) != struct.pack("<f", fb[i])]
            worst = max(abs(fa[i] - fb[i]) for i in diff)
            problems.append(
                f"{name}: {len(diff)} of {len(fa)} elements differ (max |diff| {worst:.3e}); "
                f"first [{diff[0]}] {fa[diff[0]]!r} vs {fb[diff[0]]!r}"
            )
    if ma != mb:
        keys = sorted(k for k in set(ma) | set(mb) if ma.get(k) != mb.get(k))
        problems.append(f"metadata differs: {keys}")
    if problems:
        print(f"{a} vs {b}:\n  " + "\n  ".join(problems))
        return 1
    print(f"identical: {len(ta)} tensors, {sum(len(t[2]) for t in ta.values())} bytes")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
