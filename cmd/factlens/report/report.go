// Package report renders factlens results for people: plain text for the
// terminal, Markdown for notes, and one self-contained HTML file with inline
// SVG figures that opens offline in any browser.
//
// A command builds a Document from its result (tables, heatmaps, bar charts,
// line plots) and picks a renderer. Programs that want the numbers use the
// command's JSON output, which is the result struct itself, not a Document.
package report

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// Document is one report: a title, the provenance of its numbers, and blocks.
type Document struct {
	Title string
	// Provenance names what produced the numbers: model, revision, commit,
	// weight processing, dataset and filter, seeds.
	Provenance []Field
	Blocks     []Block
}

// Field is one line of provenance.
type Field struct{ Key, Value string }

// Block is one element of a Document: *Heading, *Paragraph, *Table,
// *Heatmap, *Bars or *Lines.
type Block interface{ block() }

// Heading starts a section; Level 2 is a section, 3 a subsection.
type Heading struct {
	Level int
	Text  string
}

// Paragraph is prose.
type Paragraph struct{ Text string }

// Table is a grid of preformatted cells.
type Table struct {
	Caption string
	Header  []string
	Rows    [][]string
	// NumericCols marks columns to right-align (by index).
	NumericCols []int
}

// Heatmap is a grid of numbers drawn as coloured cells, e.g. tokens × layers.
// NaN cells are drawn empty.
type Heatmap struct {
	Caption   string
	RowLabels []string
	ColLabels []string
	Values    [][]float64 // [row][col]
	// Diverging colours negative values blue and positive red around zero;
	// otherwise values run from white (min) to dark (max).
	Diverging bool
	// Digits is the number of decimals shown in text cells and tooltips.
	Digits int
}

// Bars is a bar chart (a histogram when the labels are bins).
type Bars struct {
	Caption string
	Labels  []string
	Values  []float64
	XLabel  string
	YLabel  string
}

// Lines is a line plot of one or more series over a shared x axis.
type Lines struct {
	Caption string
	XLabel  string
	YLabel  string
	X       []float64
	Series  []Series
}

// Series is one line of a Lines plot.
type Series struct {
	Name string
	Y    []float64
}

func (*Heading) block()   {}
func (*Paragraph) block() {}
func (*Table) block()     {}
func (*Heatmap) block()   {}
func (*Bars) block()      {}
func (*Lines) block()     {}

// Formats are the renderers' names as the --format flag spells them.
var Formats = []string{"text", "md", "html"}

// Render writes doc to w in the named format ("text", "md" or "html").
func Render(w io.Writer, doc *Document, format string) error {
	switch format {
	case "text":
		return Text(w, doc)
	case "md", "markdown":
		return Markdown(w, doc)
	case "html":
		return HTML(w, doc)
	}
	return fmt.Errorf("report: unknown format %q (want text, md or html)", format)
}

// formatNumber prints v with the given decimals, "" for NaN.
func formatNumber(v float64, digits int) string {
	if math.IsNaN(v) {
		return ""
	}
	if math.IsInf(v, 1) {
		return "+inf"
	}
	if math.IsInf(v, -1) {
		return "-inf"
	}
	return fmt.Sprintf("%.*f", digits, v)
}

// formatPlotValue prints a plotted value compactly: integers (counts, ranks,
// layers) without decimals, other values with four significant digits.
func formatPlotValue(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return formatNumber(v, 0)
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.4g", v)
}

// valueRange returns the finite min and max of a grid; ok is false when no
// cell is finite.
func valueRange(values [][]float64) (lo, hi float64, ok bool) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, row := range values {
		for _, v := range row {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			lo, hi, ok = math.Min(lo, v), math.Max(hi, v), true
		}
	}
	return lo, hi, ok
}

// visible replaces characters that would break a one-line table cell:
// GPT-2 tokens carry leading spaces and newlines that matter to the reader.
func visible(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\x%02x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	return b.String()
}

// Token formats a GPT-2 token for a table cell: quoted, with its leading
// space and control characters visible.
func Token(s string) string {
	return "'" + visible(s) + "'"
}

// grid is a figure's numbers as a table, for the renderers that cannot draw:
// a header, rows of formatted cells, and the numeric columns.
type grid struct {
	header  []string
	rows    [][]string
	numeric []int
}

func (h *Heatmap) grid() grid {
	g := grid{header: append([]string{""}, h.ColLabels...)}
	for j := range h.ColLabels {
		g.numeric = append(g.numeric, j+1)
	}
	for i, vals := range h.Values {
		row := []string{""}
		if i < len(h.RowLabels) {
			row[0] = h.RowLabels[i]
		}
		for _, v := range vals {
			row = append(row, formatNumber(v, h.Digits))
		}
		g.rows = append(g.rows, row)
	}
	return g
}

func (l *Lines) grid() grid {
	g := grid{header: []string{l.XLabel}, numeric: []int{0}}
	for j, s := range l.Series {
		g.header = append(g.header, s.Name)
		g.numeric = append(g.numeric, j+1)
	}
	for i, x := range l.X {
		row := []string{trimFloat(x)}
		for _, s := range l.Series {
			v := ""
			if i < len(s.Y) {
				v = formatPlotValue(s.Y[i])
			}
			row = append(row, v)
		}
		g.rows = append(g.rows, row)
	}
	return g
}

func (b *Bars) grid() grid {
	g := grid{header: []string{b.XLabel, b.YLabel}, numeric: []int{1}}
	for i, v := range b.Values {
		label := ""
		if i < len(b.Labels) {
			label = b.Labels[i]
		}
		g.rows = append(g.rows, []string{label, fmt.Sprintf("%g", v)})
	}
	return g
}
