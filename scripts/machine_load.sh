# Sourced by the benchmark scripts: how busy the whole machine was, to tell how much else ran
# while something was measured.

# Busy CPU ms of the whole machine (every process) since boot.
MACHINE_TICKS=$(getconf CLK_TCK 2>/dev/null || echo 100)
busy_ms() {
    local _cpu user nice system _idle _iowait irq softirq steal _rest
    read -r _cpu user nice system _idle _iowait irq softirq steal _rest </proc/stat
    echo $(((user + nice + system + irq + softirq + steal) * 1000 / MACHINE_TICKS))
}

# Wall clock in ms.
now_ms() { date +%s%3N; }
