#!/usr/bin/env bash
# The kernel benchmarks of several modes side by side, as a Markdown table:
#   hack/bench-table.sh bin/bench/nftables.txt bin/bench/iptables.txt bin/bench/ebpf.txt
# Each file is one mode's `go test -bench Kernel` output, named after the
# mode. Times per operation are shown in ms; other metrics as reported.
set -euo pipefail
awk '
FNR == 1 { m = FILENAME; sub(/.*\//, "", m); sub(/\.txt$/, "", m); modes[++nm] = m }
/^BenchmarkKernel/ {
	name = $1; sub(/^BenchmarkKernel/, "", name); sub(/-[0-9]+$/, "", name)
	for (i = 3; i < NF; i += 2) {
		v = $i; u = $(i + 1)
		if (u == "ns/op") { if (v == 0) continue; v = sprintf("%.1f", v / 1e6); u = "ms" }
		row = name " (" u ")"
		if (!(row in seen)) { seen[row] = 1; rows[++nr] = row }
		val[row, m] = v
	}
}
END {
	printf "| benchmark |"; for (j = 1; j <= nm; j++) printf " %s |", modes[j]; print ""
	printf "|---|"; for (j = 1; j <= nm; j++) printf "---:|"; print ""
	for (r = 1; r <= nr; r++) {
		printf "| %s |", rows[r]
		for (j = 1; j <= nm; j++) printf " %s |", ((rows[r], modes[j]) in val) ? val[rows[r], modes[j]] : "-"
		print ""
	}
}' "$@"
