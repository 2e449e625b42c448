package report

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// Markdown renders doc as GitHub-flavoured Markdown: provenance as a list,
// tables as pipe tables, heatmaps and plots as tables of their numbers.
func Markdown(w io.Writer, doc *Document) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "# %s\n\n", mdEscape(doc.Title))
	for _, f := range doc.Provenance {
		fmt.Fprintf(bw, "- **%s**: %s\n", mdEscape(f.Key), mdEscape(f.Value))
	}
	for _, b := range doc.Blocks {
		fmt.Fprintln(bw)
		switch b := b.(type) {
		case *Heading:
			fmt.Fprintf(bw, "%s %s\n", strings.Repeat("#", max(2, min(b.Level, 6))), mdEscape(b.Text))
		case *Paragraph:
			fmt.Fprintln(bw, mdEscape(b.Text))
		case *Table:
			mdCaption(bw, b.Caption)
			mdTable(bw, b.Header, b.Rows, b.NumericCols)
		case *Heatmap:
			mdCaption(bw, b.Caption)
			g := b.grid()
			mdTable(bw, g.header, g.rows, nil)
		case *Bars:
			mdCaption(bw, b.Caption)
			g := b.grid()
			mdTable(bw, g.header, g.rows, g.numeric)
		case *Lines:
			mdCaption(bw, b.Caption)
			g := b.grid()
			mdTable(bw, g.header, g.rows, nil)
		}
	}
	return bw.Flush()
}

func mdCaption(w io.Writer, caption string) {
	if caption != "" {
		fmt.Fprintf(w, "*%s*\n\n", mdEscape(caption))
	}
}

func mdTable(w io.Writer, header []string, rows [][]string, numeric []int) {
	isNum := map[int]bool{}
	for _, c := range numeric {
		isNum[c] = true
	}
	cell := func(s string) string { return strings.ReplaceAll(mdEscape(visible(s)), "|", `\|`) }
	fmt.Fprint(w, "|")
	for _, h := range header {
		fmt.Fprintf(w, " %s |", cell(h))
	}
	fmt.Fprint(w, "\n|")
	for j := range header {
		if isNum[j] {
			fmt.Fprint(w, " ---: |")
		} else {
			fmt.Fprint(w, " --- |")
		}
	}
	fmt.Fprintln(w)
	for _, r := range rows {
		fmt.Fprint(w, "|")
		for j := range header {
			c := ""
			if j < len(r) {
				c = r[j]
			}
			// Leading spaces matter in GPT-2 tokens; Markdown would eat them.
			fmt.Fprintf(w, " %s |", strings.ReplaceAll(cell(c), " ", "\u00a0"))
		}
		fmt.Fprintln(w)
	}
}

// mdEscape escapes the characters that would start Markdown markup inside
// running text.
func mdEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, "*", `\*`, "_", `\_`, "`", "\\`", "<", "&lt;", ">", "&gt;", "[", `\[`, "]", `\]`)
	return r.Replace(s)
}
