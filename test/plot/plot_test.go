package plot

import (
	"strings"
	"testing"
)

func TestTicks(t *testing.T) {
	for _, c := range []struct {
		lo, hi float64
		n      int
		want   string
	}{
		{0, 60, 6, "0 10 20 30 40 50 60"},
		{0, 1.3, 6, "0.0 0.2 0.4 0.6 0.8 1.0 1.2 1.4"},
		{0, 3600, 8, "0 500 1000 1500 2000 2500 3000 3500 4000"},
		{37, 63, 6, "35 40 45 50 55 60 65"},
		{0, 0.07, 6, "0.00 0.01 0.02 0.03 0.04 0.05 0.06 0.07"},
		{0, 1, 1, "0 1"},
	} {
		ts := ticks(c.lo, c.hi, c.n)
		var got []string
		for _, v := range ts.values() {
			got = append(got, ts.format(v))
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("ticks(%v, %v) = %v, want %s", c.lo, c.hi, got, c.want)
		}
	}
}

func TestChartDraws(t *testing.T) {
	c := Chart{
		Title: "t", XLabel: "x", YLabel: "y", YFromZero: true,
		Series: []Series{
			{Name: "line", Color: Blue, Points: []Point{{0, 1}, {5, 3}, {10, 2}}},
			{Name: "dots", Color: Red, Points: []Point{{2, 2}, {8, 1}}, Dots: true},
		},
		Marks: []Mark{{X: 4, Label: "m"}},
	}
	img := c.Draw(400, 200)
	count := map[[4]uint8]int{}
	for y := 0; y < 200; y++ {
		for x := 0; x < 400; x++ {
			r, g, b, a := img.At(x, y).RGBA()
			count[[4]uint8{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), uint8(a >> 8)}]++
		}
	}
	for _, col := range []struct {
		name string
		c    [4]uint8
		min  int
	}{{"line", [4]uint8{Blue.R, Blue.G, Blue.B, 255}, 100}, {"dots", [4]uint8{Red.R, Red.G, Red.B, 255}, 18}, {"text", [4]uint8{0, 0, 0, 255}, 50}} {
		if count[col.c] < col.min {
			t.Errorf("%s: %d pixels of its colour, want at least %d", col.name, count[col.c], col.min)
		}
	}
	// An empty chart draws too.
	(Chart{}).Draw(100, 80)
}
