# bench-plot.gp -- nadbfs's standing at a glance: for each workload, nadbfs's
# figure divided by passthrough_ll's and by the bare disk's, as a pair of bars
# on a log scale, growing up (faster) or down (slower) from the parity line
# at 1, with a dashed line at 0.5 (the "half of bare disk" goal), so that a
# reader sees at once where nadbfs is ahead and where it is behind.
#
# Called by tools/bench.sh:
#   gnuplot -e "data='ratios.dat'; out='ratios.png'; subtitle='...'" tools/bench-plot.gp
# data: tab-separated rows "workload  nadbfs/passthrough_ll  nadbfs/native",
# NaN where a figure is missing.

if (!exists("data")) data = "build/bench/ratios.dat"
if (!exists("out")) out = "build/bench/ratios.png"
if (!exists("subtitle")) subtitle = ""

set datafile separator "\t"
set datafile missing "NaN"

# y range: a decade around every ratio, always showing 0.5 and 1
lo = 0.5; hi = 1.0
do for [col = 2:3] {
	undefine STATS_*
	stats data using col nooutput
	if (exists("STATS_records") && STATS_records > 0) {
		lo = (STATS_min < lo) ? STATS_min : lo
		hi = (STATS_max > hi) ? STATS_max : hi
	}
}
ylo = 10 ** floor(log10(lo) - 0.1)
yhi = 10 ** ceil(log10(hi) + 0.3)

set terminal pngcairo size 1280,680 enhanced font "DejaVu Sans,10"
set output out
set title "nadbfs relative to passthrough\\_ll and to the bare disk (1 = as fast, higher is better)\n{/*0.85 " . subtitle . "}"
set style fill solid 0.85 border -1
set logscale y 10
set yrange [ylo:yhi]
set xrange [-0.6:*]
set offsets 0, 0.6, 0, 0
set ylabel "nadbfs figure / reference figure (log scale)"
set format y "%g"
set xtics rotate by -35 left nomirror scale 0
set ytics nomirror
set grid ytics mytics lc rgb "#dddddd"
set key at screen 0.5, screen 0.035 center horizontal
set bmargin 7
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead lw 2 lc rgb "black" front
set arrow 2 from graph 0, first 0.5 to graph 1, first 0.5 nohead lw 1 dt 2 lc rgb "#555555" front

# Bars grow from 1 (parity): up where nadbfs is faster, down where slower.
# Row N's pair sits at x = N -/+ w/2 + ..., each bar w wide.
w = 0.36
lower(r) = r < 1 ? r : 1
upper(r) = r < 1 ? 1 : r
plot data using ($0 - w/2):2:($0 - w):($0):(lower($2)):(upper($2)):xtic(1) \
          with boxxyerror title "nadbfs / passthrough\\_ll" lc rgb "#3b75af", \
     '' using ($0 + w/2):3:($0):($0 + w):(lower($3)):(upper($3)) \
          with boxxyerror title "nadbfs / native (plain directory)" lc rgb "#ef8636", \
     '' using ($0 - w/2):($2 >= 1 ? $2 : NaN):(sprintf("%.2g", $2)) with labels offset 0,0.6 font ",8" notitle, \
     '' using ($0 + w/2):($3 >= 1 ? $3 : NaN):(sprintf("%.2g", $3)) with labels offset 0,0.6 font ",8" notitle, \
     '' using ($0 - w/2):($2 < 1 ? $2 : NaN):(sprintf("%.2g", $2)) with labels offset 0,-0.6 font ",8" notitle, \
     '' using ($0 + w/2):($3 < 1 ? $3 : NaN):(sprintf("%.2g", $3)) with labels offset 0,-0.6 font ",8" notitle
