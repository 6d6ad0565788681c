// Package plot draws the line charts of the repository's reports (the
// soak's, the kube-proxy comparison's) as PNG with the standard library's
// image packages and a fixed bitmap font, so that a report needs no tool
// beyond Go.
package plot

import (
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"strconv"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// A chart is a line chart drawn with the standard library's image packages
// and a fixed bitmap font: axes, ticks with their values, a polyline or dots
// per series, and vertical markers. Enough to see a trend at a glance.
type Chart struct {
	Title, XLabel, YLabel string
	Series                []Series
	Marks                 []Mark // vertical lines, e.g. where the churn began
	// YFromZero starts the y axis at 0, so that a flat line looks flat
	// and a small wobble small.
	YFromZero bool
}

type Series struct {
	Name   string
	Color  color.RGBA
	Points []Point
	Dots   bool // dots instead of a line
}

// Point is one point of a series.
type Point struct {
	X, Y float64
}

type Mark struct {
	X     float64
	Label string
}

var (
	white    = color.RGBA{255, 255, 255, 255}
	black    = color.RGBA{0, 0, 0, 255}
	grey     = color.RGBA{225, 225, 225, 255}
	darkGrey = color.RGBA{120, 120, 120, 255}
	// The series colours (matplotlib's first ones).
	Blue   = color.RGBA{31, 119, 180, 255}
	Orange = color.RGBA{255, 127, 14, 255}
	Red    = color.RGBA{214, 39, 40, 255}
	Green  = color.RGBA{44, 160, 44, 255}
	Purple = color.RGBA{148, 103, 189, 255}
	Brown  = color.RGBA{140, 86, 75, 255}
	Pink   = color.RGBA{227, 119, 194, 255}
	Olive  = color.RGBA{188, 189, 34, 255}
	Cyan   = color.RGBA{23, 190, 207, 255}
)

// Palette is the series colours in order, for charts with many series.
var Palette = []color.RGBA{Blue, Orange, Green, Red, Purple, Brown, Pink, Olive, Cyan}

const (
	marginLeft   = 72
	marginRight  = 20
	marginTop    = 40
	marginBottom = 48
)

// Draw renders the chart at w x h pixels.
func (c Chart) Draw(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.NewUniform(white), image.Point{}, draw.Src)
	area := image.Rect(marginLeft, marginTop, w-marginRight, h-marginBottom)

	x0, x1, y0, y1 := c.bounds()
	xt := ticks(x0, x1, 8)
	yt := ticks(y0, y1, 6)
	// The axes span whole ticks.
	x0, x1 = math.Min(x0, xt.first), math.Max(x1, xt.last)
	y0, y1 = math.Min(y0, yt.first), math.Max(y1, yt.last)
	px := func(x float64) int {
		return area.Min.X + int(math.Round((x-x0)/(x1-x0)*float64(area.Dx()-1)))
	}
	py := func(y float64) int {
		return area.Max.Y - 1 - int(math.Round((y-y0)/(y1-y0)*float64(area.Dy()-1)))
	}

	for _, v := range yt.values() {
		y := py(v)
		hline(img, area.Min.X, area.Max.X-1, y, grey)
		hline(img, area.Min.X-4, area.Min.X-1, y, black)
		s := yt.format(v)
		text(img, area.Min.X-8-7*len(s), y+4, s, black)
	}
	for _, v := range xt.values() {
		x := px(v)
		vline(img, x, area.Min.Y, area.Max.Y-1, grey)
		vline(img, x, area.Max.Y, area.Max.Y+3, black)
		s := xt.format(v)
		text(img, x-7*len(s)/2, area.Max.Y+16, s, black)
	}
	for _, m := range c.Marks {
		x := px(m.X)
		for y := area.Min.Y; y < area.Max.Y; y += 6 { // dashed
			vline(img, x, y, min(y+2, area.Max.Y-1), darkGrey)
		}
		text(img, x+3, area.Min.Y+12, m.Label, darkGrey)
	}
	hline(img, area.Min.X, area.Max.X-1, area.Max.Y-1, black)
	vline(img, area.Min.X, area.Min.Y, area.Max.Y-1, black)

	for _, s := range c.Series {
		var prev image.Point
		for i, p := range s.Points {
			q := image.Pt(px(p.X), py(p.Y))
			if s.Dots {
				dot(img, q, area, s.Color)
			} else if i > 0 {
				line(img, prev, q, area, s.Color)
			}
			prev = q
		}
	}

	text(img, area.Min.X, 18, c.Title, black)
	text(img, area.Min.X+area.Dx()/2-7*len(c.XLabel)/2, h-10, c.XLabel, black)
	text(img, 6, area.Min.Y-10, c.YLabel, black)
	// The legend, in the plot's top right corner on a white box, one line
	// per series.
	wide := 0
	for _, s := range c.Series {
		wide = max(wide, 7*len(s.Name))
	}
	box := image.Rect(area.Max.X-wide-28, area.Min.Y+4, area.Max.X-4, area.Min.Y+10+14*len(c.Series))
	if len(c.Series) > 0 {
		fill(img, box, white)
		hline(img, box.Min.X, box.Max.X, box.Min.Y, darkGrey)
		hline(img, box.Min.X, box.Max.X, box.Max.Y, darkGrey)
		vline(img, box.Min.X, box.Min.Y, box.Max.Y, darkGrey)
		vline(img, box.Max.X, box.Min.Y, box.Max.Y, darkGrey)
	}
	for i, s := range c.Series {
		y := box.Min.Y + 16 + 14*i
		fill(img, image.Rect(box.Min.X+6, y-9, box.Min.X+16, y-1), s.Color)
		text(img, box.Min.X+20, y, s.Name, black)
	}
	return img
}

// bounds are the ranges of the data and marks, never empty.
func (c Chart) bounds() (x0, x1, y0, y1 float64) {
	x0, y0 = math.Inf(1), math.Inf(1)
	x1, y1 = math.Inf(-1), math.Inf(-1)
	for _, s := range c.Series {
		for _, p := range s.Points {
			if math.IsNaN(p.Y) || math.IsNaN(p.X) {
				continue
			}
			x0, x1 = math.Min(x0, p.X), math.Max(x1, p.X)
			y0, y1 = math.Min(y0, p.Y), math.Max(y1, p.Y)
		}
	}
	for _, m := range c.Marks {
		x0, x1 = math.Min(x0, m.X), math.Max(x1, m.X)
	}
	if math.IsInf(x0, 1) {
		x0, x1 = 0, 1
	}
	if math.IsInf(y0, 1) {
		y0, y1 = 0, 1
	}
	if c.YFromZero {
		y0 = math.Min(0, y0)
		y1 += (y1 - y0) * 0.1 // headroom, so a flat line is not the top edge
	}
	if x1 <= x0 {
		x1 = x0 + 1
	}
	if y1 <= y0 {
		y1 = y0 + 1
	}
	return x0, x1, y0, y1
}

// tickSet is an axis's ticks: first, first+step, ..., last.
type tickSet struct {
	first, last, step float64
}

// ticks picks about n round ticks (1, 2 or 5 times a power of ten apart)
// that cover lo..hi.
func ticks(lo, hi float64, n int) tickSet {
	raw := (hi - lo) / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	step := p
	for _, m := range []float64{2, 5, 10} {
		if math.Abs(math.Log(m*p/raw)) < math.Abs(math.Log(step/raw)) {
			step = m * p
		}
	}
	// The epsilon keeps 0.07/0.01 = 7.000000000000001 from adding a tick.
	return tickSet{first: math.Floor(lo/step+1e-9) * step, last: math.Ceil(hi/step-1e-9) * step, step: step}
}

func (t tickSet) values() []float64 {
	var out []float64
	for i := 0; ; i++ {
		v := t.first + float64(i)*t.step
		if v > t.last+t.step/2 {
			return out
		}
		out = append(out, v)
	}
}

// format writes a tick's value with as many decimals as the step needs.
func (t tickSet) format(v float64) string {
	dec := 0
	if t.step < 1 {
		dec = int(math.Ceil(-math.Log10(t.step) - 1e-9))
	}
	if math.Abs(v) < t.step/1e6 {
		v = 0 // no "-0"
	}
	return strconv.FormatFloat(v, 'f', dec, 64)
}

func text(img *image.RGBA, x, y int, s string, c color.RGBA) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func hline(img *image.RGBA, x0, x1, y int, c color.RGBA) {
	for x := x0; x <= x1; x++ {
		img.SetRGBA(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.RGBA) {
	for y := y0; y <= y1; y++ {
		img.SetRGBA(x, y, c)
	}
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	draw.Draw(img, r, image.NewUniform(c), image.Point{}, draw.Src)
}

// dot is a 3x3 square inside clip.
func dot(img *image.RGBA, p image.Point, clip image.Rectangle, c color.RGBA) {
	fill(img, image.Rect(p.X-1, p.Y-1, p.X+2, p.Y+2).Intersect(clip), c)
}

// line draws a 2-pixel-wide line from a to b (Bresenham), inside clip.
func line(img *image.RGBA, a, b image.Point, clip image.Rectangle, c color.RGBA) {
	dx, dy := abs(b.X-a.X), -abs(b.Y-a.Y)
	sx, sy := sign(b.X-a.X), sign(b.Y-a.Y)
	e := dx + dy
	for {
		for _, q := range [...]image.Point{a, a.Add(image.Pt(1, 0)), a.Add(image.Pt(0, 1))} {
			if q.In(clip) {
				img.SetRGBA(q.X, q.Y, c)
			}
		}
		if a == b {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			a.X += sx
		}
		if e2 <= dx {
			e += dx
			a.Y += sy
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func sign(x int) int {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return 0
}

// WritePNG writes img to path.
func WritePNG(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
