package report

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// HTML renders doc as one self-contained page: inline CSS and SVG, no
// scripts, no external resources, so it opens offline in any browser.
func HTML(w io.Writer, doc *Document) error {
	bw := bufio.NewWriter(w)
	esc := html.EscapeString
	fmt.Fprintf(bw, `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>%s</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.tok{font-family:ui-monospace,monospace;white-space:pre-wrap}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px}
dt{font-weight:600}
figure{margin:0 0 1.5em}figcaption{font-size:13px;color:#555;margin-bottom:4px}
svg text{font-family:ui-monospace,monospace;font-size:11px}
</style></head><body>
<h1>%s</h1>
`, esc(doc.Title), esc(doc.Title))
	if len(doc.Provenance) > 0 {
		fmt.Fprintln(bw, "<dl>")
		for _, f := range doc.Provenance {
			fmt.Fprintf(bw, "<dt>%s</dt><dd>%s</dd>\n", esc(f.Key), esc(f.Value))
		}
		fmt.Fprintln(bw, "</dl>")
	}
	for _, b := range doc.Blocks {
		switch b := b.(type) {
		case *Heading:
			lvl := max(2, min(b.Level, 6))
			fmt.Fprintf(bw, "<h%d>%s</h%d>\n", lvl, esc(b.Text), lvl)
		case *Paragraph:
			fmt.Fprintf(bw, "<p>%s</p>\n", esc(b.Text))
		case *Table:
			htmlTable(bw, b)
		case *Heatmap:
			htmlHeatmap(bw, b)
		case *Bars:
			htmlBars(bw, b)
		case *Lines:
			htmlLines(bw, b)
		}
	}
	fmt.Fprintln(bw, "</body></html>")
	return bw.Flush()
}

func htmlTable(w io.Writer, t *Table) {
	esc := html.EscapeString
	isNum := map[int]bool{}
	for _, c := range t.NumericCols {
		isNum[c] = true
	}
	fmt.Fprintln(w, "<figure>")
	if t.Caption != "" {
		fmt.Fprintf(w, "<figcaption>%s</figcaption>\n", esc(t.Caption))
	}
	fmt.Fprint(w, "<table><thead><tr>")
	for _, h := range t.Header {
		fmt.Fprintf(w, "<th>%s</th>", esc(h))
	}
	fmt.Fprintln(w, "</tr></thead><tbody>")
	for _, r := range t.Rows {
		fmt.Fprint(w, "<tr>")
		for j, c := range r {
			class := "tok"
			if isNum[j] {
				class = "num"
			}
			fmt.Fprintf(w, `<td class="%s">%s</td>`, class, esc(visible(c)))
		}
		fmt.Fprintln(w, "</tr>")
	}
	fmt.Fprintln(w, "</tbody></table></figure>")
}

// cellColour maps v to a fill: white→dark red for sequential data, blue←white→red
// for diverging data (symmetric around zero).
func cellColour(v, lo, hi float64, diverging bool) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "#f4f4f4"
	}
	if diverging {
		m := max(math.Abs(lo), math.Abs(hi))
		if m == 0 {
			return "#ffffff"
		}
		t := v / m
		if t >= 0 {
			return mix(t, [3]float64{255, 255, 255}, [3]float64{178, 24, 43})
		}
		return mix(-t, [3]float64{255, 255, 255}, [3]float64{33, 102, 172})
	}
	if hi == lo {
		return mix(0.5, [3]float64{255, 255, 255}, [3]float64{128, 0, 38})
	}
	return mix((v-lo)/(hi-lo), [3]float64{255, 255, 255}, [3]float64{128, 0, 38})
}

func mix(t float64, a, b [3]float64) string {
	t = max(0, min(1, t))
	return fmt.Sprintf("#%02x%02x%02x", int(a[0]+(b[0]-a[0])*t), int(a[1]+(b[1]-a[1])*t), int(a[2]+(b[2]-a[2])*t))
}

func htmlHeatmap(w io.Writer, h *Heatmap) {
	esc := html.EscapeString
	const ch = 18
	cw := 46
	for _, l := range h.ColLabels {
		cw = max(cw, len([]rune(visible(l)))*7+8)
	}
	labelW := 8
	for _, l := range h.RowLabels {
		labelW = max(labelW, len([]rune(visible(l)))*7+10)
	}
	labelW = min(labelW, 260)
	cols := len(h.ColLabels)
	for _, r := range h.Values {
		cols = max(cols, len(r))
	}
	width := labelW + cols*cw + 10
	height := 24 + len(h.Values)*ch + 10
	lo, hi, _ := valueRange(h.Values)
	fmt.Fprintln(w, "<figure>")
	if h.Caption != "" {
		fmt.Fprintf(w, "<figcaption>%s</figcaption>\n", esc(h.Caption))
	}
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img">`+"\n", width, height, width, height)
	for j, l := range h.ColLabels {
		fmt.Fprintf(w, `<text x="%d" y="16" text-anchor="middle">%s</text>`+"\n", labelW+j*cw+cw/2, esc(visible(l)))
	}
	for i, row := range h.Values {
		y := 24 + i*ch
		if i < len(h.RowLabels) {
			fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="end" xml:space="preserve">%s</text>`+"\n", labelW-6, y+13, esc(visible(h.RowLabels[i])))
		}
		for j, v := range row {
			tip := formatNumber(v, max(h.Digits, 3))
			if i < len(h.RowLabels) && j < len(h.ColLabels) {
				tip = fmt.Sprintf("%s, %s: %s", visible(h.RowLabels[i]), h.ColLabels[j], tip)
			}
			fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"><title>%s</title></rect>`+"\n",
				labelW+j*cw, y, cw-1, ch-1, cellColour(v, lo, hi, h.Diverging), esc(tip))
			if txt := formatNumber(v, h.Digits); txt != "" {
				fill := "#000"
				if lum(cellColour(v, lo, hi, h.Diverging)) < 110 {
					fill = "#fff"
				}
				fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle" fill="%s">%s</text>`+"\n", labelW+j*cw+cw/2, y+13, fill, esc(txt))
			}
		}
	}
	fmt.Fprintln(w, "</svg></figure>")
}

// lum is the perceived brightness (0–255) of a #rrggbb colour.
func lum(hex string) float64 {
	var r, g, b int
	if _, err := fmt.Sscanf(hex, "#%02x%02x%02x", &r, &g, &b); err != nil {
		return 255
	}
	return 0.299*float64(r) + 0.587*float64(g) + 0.114*float64(b)
}

func htmlBars(w io.Writer, b *Bars) {
	esc := html.EscapeString
	const plotH, barW, left, bottom = 160, 22, 50, 60
	n := len(b.Values)
	width := left + n*barW + 20
	height := plotH + bottom + 20
	lo, hi, _ := valueRange([][]float64{b.Values})
	lo, hi = min(lo, 0), max(hi, 0)
	if hi == lo {
		hi = lo + 1
	}
	y := func(v float64) float64 { return 10 + plotH*(hi-v)/(hi-lo) }
	fmt.Fprintln(w, "<figure>")
	if b.Caption != "" {
		fmt.Fprintf(w, "<figcaption>%s</figcaption>\n", esc(b.Caption))
	}
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img">`+"\n", width, height, width, height)
	fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#999"/>`+"\n", left, y(0), width-10, y(0))
	fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-4, y(hi)+4, esc(trimFloat(hi)))
	fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-4, y(lo)+4, esc(trimFloat(lo)))
	for i, v := range b.Values {
		x := left + i*barW
		top, bot := y(max(v, 0)), y(min(v, 0))
		label := ""
		if i < len(b.Labels) {
			label = visible(b.Labels[i])
		}
		fmt.Fprintf(w, `<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="#4575b4"><title>%s: %g</title></rect>`+"\n", x+2, top, barW-4, bot-top, esc(label), v)
		fmt.Fprintf(w, `<text transform="translate(%d,%d) rotate(-60)" text-anchor="end" xml:space="preserve">%s</text>`+"\n", x+barW/2+4, plotH+24, esc(label))
	}
	if b.YLabel != "" {
		fmt.Fprintf(w, `<text x="4" y="10">%s</text>`+"\n", esc(b.YLabel))
	}
	if b.XLabel != "" {
		fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", width/2, height-4, esc(b.XLabel))
	}
	fmt.Fprintln(w, "</svg></figure>")
}

var seriesColours = []string{"#d73027", "#4575b4", "#1a9850", "#984ea3", "#ff7f00", "#666666"}

func htmlLines(w io.Writer, l *Lines) {
	esc := html.EscapeString
	const height, left, top, bottom = 300, 60, 10, 40
	right := 150
	for _, s := range l.Series {
		right = max(right, len([]rune(s.Name))*7+20)
	}
	width := 490 + right
	xlo, xhi, okx := valueRange([][]float64{l.X})
	ys := make([][]float64, len(l.Series))
	for i, s := range l.Series {
		ys[i] = s.Y
	}
	ylo, yhi, oky := valueRange(ys)
	if !okx || !oky {
		return
	}
	ylo = min(ylo, 0)
	if xhi == xlo {
		xhi = xlo + 1
	}
	if yhi == ylo {
		yhi = ylo + 1
	}
	plotW := float64(width - left - right)
	px := func(x float64) float64 { return left + plotW*(x-xlo)/(xhi-xlo) }
	py := func(y float64) float64 { return top + (height-top-bottom)*(yhi-y)/(yhi-ylo) }
	fmt.Fprintln(w, "<figure>")
	if l.Caption != "" {
		fmt.Fprintf(w, "<figcaption>%s</figcaption>\n", esc(l.Caption))
	}
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img">`+"\n", width, height, width, height)
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n", left, top, width-left-right, height-top-bottom)
	for _, t := range []float64{ylo, (ylo + yhi) / 2, yhi} {
		fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-4, py(t)+4, esc(fmt.Sprintf("%.3g", t)))
	}
	for _, t := range []float64{xlo, (xlo + xhi) / 2, xhi} {
		fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", px(t), height-bottom+14, esc(fmt.Sprintf("%.3g", t)))
	}
	for i, s := range l.Series {
		colour := seriesColours[i%len(seriesColours)]
		var pts []string
		for j, y := range s.Y {
			if j >= len(l.X) || math.IsNaN(y) || math.IsInf(y, 0) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(l.X[j]), py(y)))
		}
		fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", colour, strings.Join(pts, " "))
		// Markers keep single points (a 1-layer model's curve) visible.
		for j, y := range s.Y {
			if j < len(l.X) && !math.IsNaN(y) && !math.IsInf(y, 0) {
				fmt.Fprintf(w, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s: %s at %s</title></circle>`+"\n",
					px(l.X[j]), py(y), colour, esc(s.Name), formatPlotValue(y), formatPlotValue(l.X[j]))
			}
		}
		fmt.Fprintf(w, `<text x="%d" y="%d" fill="%s">%s</text>`+"\n", width-right+8, top+14+16*i, colour, esc(s.Name))
	}
	fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", left+(width-left-right)/2, height-6, esc(l.XLabel))
	fmt.Fprintf(w, `<text x="4" y="%d">%s</text>`+"\n", top+8, esc(l.YLabel))
	fmt.Fprintln(w, "</svg></figure>")
}
