#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine (Debian's slurmctld, slurmd and munge, in the
# foreground, bound to the loopback, stopped by PID), running a sweep as a job array:
#   1. `sbatch --wait` of `clampnet sweep slurm`'s script (4 array tasks, 6 trials, lavapipe);
#   2. its merged report equals a local `sweep run` of the same grid, byte for byte;
#   3. two trial results deleted, the array indices the report names resubmitted: exactly those two
#      trials retrain, and the report is again equal.
# Usage: tests/slurm.sh CLAMPNET_BINARY WORKDIR. Exit 77 (skipped) only where Slurm cannot be installed
# or run (not root, no apt); any other failure exits non-zero.
set -euo pipefail
BIN=$1
W=$2
skip() { echo "SKIP: $*" >&2; exit 77; }

# --- the packages ---------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
    [ "$(id -u)" = 0 ] || skip "Slurm is not installed and this user cannot install it (not root)"
    command -v apt-get >/dev/null || skip "Slurm is not installed and there is no apt-get"
    echo "installing slurmctld slurmd slurm-client munge" >&2
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            slurmctld slurmd slurm-client munge >/dev/null 2>&1 \
            || skip "the Slurm packages (slurmctld slurmd slurm-client munge) cannot be installed here"
    fi
fi
[ "$(id -u)" = 0 ] || skip "slurmd runs jobs as root here: run as root"

# --- the daemons ------------------------------------------------------------------------------
rm -rf "$W"
mkdir -p "$W/state" "$W/spool" "$W/munge"
chmod 700 "$W/munge"
PIDS=()
stop() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap stop EXIT

head -c 1024 /dev/urandom >"$W/munge/munge.key"
chmod 400 "$W/munge/munge.key"
munged --foreground --force --socket="$W/munge/munge.socket.2" --key-file="$W/munge/munge.key" \
    --pid-file="$W/munge/munged.pid" --log-file="$W/munge/munged.log" --seed-file="$W/munge/seed" \
    >"$W/munged.out" 2>&1 &
PIDS+=($!)

export SLURM_CONF="$W/slurm.conf"
cat >"$SLURM_CONF" <<EOF
ClusterName=clampnet-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$W/munge/munge.socket.2
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd.pid
SlurmctldLogFile=$W/slurmctld.log
SlurmdLogFile=$W/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MailProg=/bin/true
SchedulerParameters=batch_sched_delay=0
NodeName=localhost CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

for _ in $(seq 100); do [ -S "$W/munge/munge.socket.2" ] && break; sleep 0.05; done
[ -S "$W/munge/munge.socket.2" ] || { cat "$W/munge/munged.log" >&2; echo "munged did not start" >&2; exit 1; }

slurmctld -D -c -f "$SLURM_CONF" >"$W/slurmctld.out" 2>&1 &
CTLD=$!
PIDS+=($CTLD)
up=0
for _ in $(seq 200); do
    kill -0 $CTLD 2>/dev/null || { cat "$W/slurmctld.out" "$W/slurmctld.log" >&2 || true; echo "slurmctld exited" >&2; exit 1; }
    if timeout 5 scontrol ping 2>/dev/null | grep -q UP; then up=1; break; fi
    sleep 0.1
done
[ $up = 1 ] || { echo "slurmctld did not come up" >&2; exit 1; }

slurmd -D -N localhost -f "$SLURM_CONF" >"$W/slurmd.out" 2>&1 &
SLURMD=$!
PIDS+=($SLURMD)
idle=0
for _ in $(seq 200); do
    kill -0 $SLURMD 2>/dev/null || { cat "$W/slurmd.out" "$W/slurmd.log" >&2 || true; echo "slurmd exited" >&2; exit 1; }
    kill -0 $CTLD 2>/dev/null || { echo "slurmctld exited" >&2; exit 1; }
    if [ "$(timeout 5 sinfo -h -N -o %T 2>/dev/null)" = idle ]; then idle=1; break; fi
    sleep 0.1
done
[ $idle = 1 ] || { echo "the node never became idle" >&2; exit 1; }

# the daemons listen on the loopback only (ports 6817, 6818: 0x1AA1, 0x1AA2), never on all interfaces
for port in 1AA1 1AA2; do
    addrs=$(awk -v p=":$port" '$4 == "0A" && $2 ~ p"$" {print $2}' /proc/net/tcp /proc/net/tcp6 | sort -u)
    [ -n "$addrs" ] || { echo "no daemon listens on port 0x$port" >&2; exit 1; }
    for a in $addrs; do
        case $a in
            0100007F:*|00000000000000000000000001000000:*) ;;
            *) echo "a Slurm daemon listens on $a, not the loopback: refusing to go on" >&2; exit 1 ;;
        esac
    done
done
echo "slurm up: slurmctld $CTLD, slurmd $SLURMD" >&2

# --- the sweep --------------------------------------------------------------------------------
cat >"$W/grid.toml" <<EOF
base = "$(pwd)/configs/none.toml"
seeds = [0, 1, 2]
[axes]
"model.layers.0.kernel_constraint" = ["none", { max_norm = { max_value = 1.0, axis = [0, 1, 2] } }]
EOF
FLAGS=(--limit-train 96 --limit-test 64 --epochs 1 --batch-size 16)
export RUST_LOG=warn
"$BIN" sweep slurm "$W/grid.toml" --out "$W/slurm" --array-size 4 --time 00:10:00 "${FLAGS[@]}"
timeout 300 sbatch --wait "$W/slurm/sweep.sbatch" || { tail -n 20 "$W"/slurm/logs/* >&2; echo "the array failed" >&2; exit 1; }
echo "array done: $(ls "$W/slurm/logs" | wc -l) task logs" >&2
grep -q '"array_task_id"' "$W"/slurm/trials/*/result.json || { echo "results lack the Slurm ids" >&2; exit 1; }

"$BIN" sweep run "$W/grid.toml" --out "$W/local" "${FLAGS[@]}" 2>"$W/local.err"
"$BIN" sweep report "$W/slurm" >/dev/null
"$BIN" sweep report "$W/local" >/dev/null
for f in report.md configs.csv; do
    cmp "$W/slurm/report/$f" "$W/local/report/$f" || { diff "$W/slurm/report/$f" "$W/local/report/$f" >&2 || true; echo "$f: the Slurm sweep differs from the local one" >&2; exit 1; }
done
echo "the Slurm array's report equals the local sweep's" >&2

# --- delete two results; resubmit what the report names; exactly those two retrain ---------------
ids=($("$BIN" sweep plan "$W/grid.toml" | awk 'NR > 1 {print $2}'))
[ ${#ids[@]} = 6 ] || { echo "expected 6 trials, got ${#ids[@]}" >&2; exit 1; }
declare -A before
for id in "${ids[@]}"; do before[$id]=$(stat -c %Y.%y "$W/slurm/trials/$id/result.json"); done
rm "$W/slurm/trials/${ids[0]}/result.json" "$W/slurm/trials/${ids[5]}/result.json"
"$BIN" sweep report "$W/slurm" >/dev/null 2>"$W/report.err"
spec=$(grep -o -- '--array=[0-9,-]*' "$W/report.err" | head -n1)
[ "$spec" = "--array=0-1" ] || { cat "$W/report.err" >&2; echo "the report asks to resubmit '$spec', not --array=0-1 (trials 0 and 5 of 4 shards)" >&2; exit 1; }
sleep 1 # a second apart, so that modification times tell the retrained results
timeout 300 sbatch --wait "$spec" "$W/slurm/sweep.sbatch" || { tail -n 20 "$W"/slurm/logs/* >&2; exit 1; }
changed=()
for id in "${ids[@]}"; do
    [ -f "$W/slurm/trials/$id/result.json" ] || { echo "trial $id has no result after the resubmission" >&2; exit 1; }
    [ "$(stat -c %Y.%y "$W/slurm/trials/$id/result.json")" = "${before[$id]}" ] || changed+=("$id")
done
[ "${changed[*]}" = "${ids[0]} ${ids[5]}" ] || { echo "retrained: ${changed[*]}; expected ${ids[0]} ${ids[5]}" >&2; exit 1; }
"$BIN" sweep report "$W/slurm" >/dev/null
cmp "$W/slurm/report/report.md" "$W/local/report/report.md" || { echo "report.md differs after the resubmission" >&2; exit 1; }
echo "PASS: resubmitted $spec retrained exactly ${changed[*]}" >&2
