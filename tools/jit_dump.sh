#!/usr/bin/env bash
# What llvmpipe made of clampnet's kernels: runs `clampnet bench` (BENCH_ARGS, default: batch 128, a long
# run), copies the JIT code pages of the running process with gdb, disassembles them with objdump into
# OUT.<address>.s, and prints each compiled function's size and instruction mix (multiplies, adds,
# blends, lane extracts = per-lane gathers, stack accesses = spills, jumps). Functions are not named; tell
# them apart by their multiply count. Needs gdb and objdump (binutils) and lavapipe as the adapter.
#   tools/jit_dump.sh [OUT=target/jit/dump] [BIN=target/release/clampnet] [BENCH_ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/jit/dump}
bin=${2:-target/release/clampnet}
shift $(($# < 2 ? $# : 2))
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--batch-sizes 128 --steps 1000000 --warmup 5)
mkdir -p "$(dirname "$out")"
rm -f "$out".*.bin "$out".*.s   # an earlier run's pages would be mixed in
command -v gdb >/dev/null && command -v objdump >/dev/null || {
    echo "jit_dump: needs gdb and objdump (apt-get install gdb binutils)" >&2
    exit 1
}
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
RUST_LOG=warn "$bin" bench "${args[@]}" >/dev/null 2>"$out.bench.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
# wait until the steps run (the kernels are compiled by then): up to 30 s
for _ in $(seq 30); do
    sleep 1
    kill -0 "$pid" 2>/dev/null || { echo "jit_dump: the bench ended early:" >&2; cat "$out.bench.log" >&2; exit 1; }
    [ "$(awk '{print $14}' "/proc/$pid/stat")" -gt 300 ] && break   # 3 s of CPU time in the process
done
# anonymous executable mappings: llvmpipe's JIT code
for r in $(grep -E " r-xp " "/proc/$pid/maps" | awk '$6 == "" {print $1}'); do
    a=${r%-*}
    b=${r#*-}
    if ! gdb -p "$pid" -batch -ex "dump binary memory $out.$a.bin 0x$a 0x$b" >"$out.gdb.log" 2>&1 ||
        [ ! -s "$out.$a.bin" ]; then
        echo "jit_dump: gdb could not read the process (ptrace not allowed?):" >&2
        cat "$out.gdb.log" >&2
        exit 1
    fi
    objdump -D -b binary -mi386:x86-64 --adjust-vma="0x$a" "$out.$a.bin" >"$out.$a.s"
done
python3 - "$out" <<'PY'
import collections, glob, re, sys
for f in sorted(glob.glob(sys.argv[1] + ".*.s")):
    ins = []
    for line in open(f):
        m = re.match(r"\s*([0-9a-f]+):\t([0-9a-f ]+)\t(\S+)\s*(.*)", line)
        if m:
            ins.append((int(m.group(1), 16), m.group(3), m.group(4)))
    starts = [i for i, (_, op, arg) in enumerate(ins) if op == "push" and arg == "%rbp"]
    for k, s in enumerate(starts):
        body = ins[s:starts[k + 1] if k + 1 < len(starts) else len(ins)]
        ops = collections.Counter(op for _, op, _ in body)
        if len(body) < 200:
            continue
        print("%s %6d instructions: mul %d add %d fma %d blend %d extract %d stack %d jumps %d" % (
            hex(body[0][0]), len(body), ops["vmulps"], ops["vaddps"],
            sum(v for o, v in ops.items() if o.startswith("vfmadd")), ops["vblendvps"], ops["vpextrd"],
            sum(1 for _, _, arg in body if "(%rsp" in arg), sum(v for o, v in ops.items() if o.startswith("j"))))
PY
