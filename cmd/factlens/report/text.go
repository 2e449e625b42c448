package report

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Text renders doc for a terminal: aligned tables, heatmaps as numeric grids
// with a shade per cell, bars drawn with block characters.
func Text(w io.Writer, doc *Document) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, doc.Title)
	fmt.Fprintln(bw, strings.Repeat("=", utf8.RuneCountInString(doc.Title)))
	for _, f := range doc.Provenance {
		fmt.Fprintf(bw, "%s: %s\n", f.Key, f.Value)
	}
	for _, b := range doc.Blocks {
		fmt.Fprintln(bw)
		switch b := b.(type) {
		case *Heading:
			fmt.Fprintln(bw, b.Text)
			fmt.Fprintln(bw, strings.Repeat("-", utf8.RuneCountInString(b.Text)))
		case *Paragraph:
			fmt.Fprintln(bw, b.Text)
		case *Table:
			writeCaption(bw, b.Caption)
			writeAligned(bw, b.Header, b.Rows, b.NumericCols)
		case *Heatmap:
			writeCaption(bw, b.Caption)
			g := b.grid()
			writeAligned(bw, g.header, g.rows, g.numeric)
		case *Bars:
			writeCaption(bw, b.Caption)
			writeBars(bw, b)
		case *Lines:
			writeCaption(bw, b.Caption)
			g := b.grid()
			writeAligned(bw, g.header, g.rows, g.numeric)
		}
	}
	return bw.Flush()
}

func writeCaption(w io.Writer, caption string) {
	if caption != "" {
		fmt.Fprintln(w, caption)
	}
}

func trimFloat(x float64) string {
	s := fmt.Sprintf("%g", x)
	return s
}

// writeAligned prints a table with columns padded to their widest cell.
func writeAligned(w io.Writer, header []string, rows [][]string, numeric []int) {
	isNum := map[int]bool{}
	for _, c := range numeric {
		isNum[c] = true
	}
	ncol := len(header)
	for _, r := range rows {
		ncol = max(ncol, len(r))
	}
	width := make([]int, ncol)
	measure := func(r []string) {
		for j, c := range r {
			width[j] = max(width[j], utf8.RuneCountInString(visible(c)))
		}
	}
	measure(header)
	for _, r := range rows {
		measure(r)
	}
	line := func(r []string) {
		var b strings.Builder
		for j := 0; j < ncol; j++ {
			c := ""
			if j < len(r) {
				c = visible(r[j])
			}
			pad := strings.Repeat(" ", width[j]-utf8.RuneCountInString(c))
			if j > 0 {
				b.WriteString("  ")
			}
			if isNum[j] {
				b.WriteString(pad + c)
			} else {
				b.WriteString(c + pad)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	if len(header) > 0 {
		line(header)
		sep := make([]string, ncol)
		for j := range sep {
			sep[j] = strings.Repeat("-", width[j])
		}
		fmt.Fprintln(w, strings.Join(sep, "  "))
	}
	for _, r := range rows {
		line(r)
	}
}

func writeBars(w io.Writer, b *Bars) {
	const full = 40
	lo, hi, ok := valueRange([][]float64{b.Values})
	if !ok {
		return
	}
	scale := max(hi, -lo)
	labelWidth := 0
	for _, l := range b.Labels {
		labelWidth = max(labelWidth, utf8.RuneCountInString(visible(l)))
	}
	for i, v := range b.Values {
		label := ""
		if i < len(b.Labels) {
			label = visible(b.Labels[i])
		}
		n := 0
		if scale > 0 {
			n = int(full*abs(v)/scale + 0.5)
		}
		fmt.Fprintf(w, "%-*s %s %g\n", labelWidth, label, strings.Repeat("█", n), v)
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
