package report

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"regexp"
	"strings"
	"testing"
)

func sampleDoc() *Document {
	return &Document{
		Title:      "Activations: <Michael> & Jordan",
		Provenance: []Field{{"model", "gpt2"}, {"weights", "raw Hugging Face"}},
		Blocks: []Block{
			&Heading{Level: 2, Text: "Tokens"},
			&Table{Header: []string{"pos", "token"}, Rows: [][]string{{"0", "Michael"}, {"1", " Jordan"}, {"2", "\n<script>"}}, NumericCols: []int{0}},
			&Heatmap{Caption: "norms", RowLabels: []string{"Michael", " Jordan"}, ColLabels: []string{"L0", "L1"},
				Values: [][]float64{{1, -2}, {math.NaN(), 3.5}}, Diverging: true, Digits: 1},
			&Bars{Caption: "density", Labels: []string{"-6", "-5"}, Values: []float64{3, 7}, XLabel: "log10", YLabel: "count"},
			&Lines{Caption: "AIE", XLabel: "layer", YLabel: "effect", X: []float64{0, 1, 2},
				Series: []Series{{Name: "mlp", Y: []float64{0.1, 0.3, 0.2}}, {Name: "attn", Y: []float64{0, 0.05, math.NaN()}}}},
		},
	}
}

func TestTextLayout(t *testing.T) {
	var buf bytes.Buffer
	doc := &Document{Title: "T", Blocks: []Block{
		&Table{Header: []string{"name", "n"}, Rows: [][]string{{"a", "1"}, {"long\tname", "100"}}, NumericCols: []int{1}},
	}}
	if err := Text(&buf, doc); err != nil {
		t.Fatal(err)
	}
	want := "T\n=\n\nname          n\n----------  ---\na             1\nlong\\tname  100\n"
	if buf.String() != want {
		t.Errorf("text table:\n%q\nwant\n%q", buf.String(), want)
	}
}

func TestMarkdownEscapesAndKeepsSpaces(t *testing.T) {
	var buf bytes.Buffer
	if err := Markdown(&buf, sampleDoc()); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"# Activations: &lt;Michael&gt; & Jordan", "| 0 | Michael |", "| \u00a0Jordan |", `\n&lt;script&gt;`} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
}

// TestHTMLIsSelfContainedAndWellFormed checks what a browser needs: every SVG
// parses as XML, user text is escaped, and nothing is fetched from outside.
func TestHTMLIsSelfContainedAndWellFormed(t *testing.T) {
	var buf bytes.Buffer
	if err := HTML(&buf, sampleDoc()); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, "<script>") {
		t.Error("unescaped <script> from a token")
	}
	if regexp.MustCompile(`(src|href)=`).MatchString(out) {
		t.Error("HTML references an external resource")
	}
	svgs := regexp.MustCompile(`(?s)<svg.*?</svg>`).FindAllString(out, -1)
	if len(svgs) != 3 {
		t.Fatalf("want 3 SVG figures, got %d", len(svgs))
	}
	for _, s := range svgs {
		d := xml.NewDecoder(strings.NewReader(s))
		for {
			_, err := d.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("SVG is not well-formed XML: %v\n%s", err, s)
			}
		}
	}
	if !strings.Contains(out, "Michael, L1: -2.000") {
		t.Error("heatmap tooltip missing")
	}
}

func TestColourScale(t *testing.T) {
	tests := []struct {
		v, lo, hi float64
		div       bool
		want      string
	}{
		{0, -1, 1, true, "#ffffff"},
		{1, -1, 1, true, "#b2182b"},
		{-1, -1, 1, true, "#2166ac"},
		{0, 0, 10, false, "#ffffff"},
		{10, 0, 10, false, "#800026"},
		{math.NaN(), 0, 1, false, "#f4f4f4"},
	}
	for _, tt := range tests {
		if got := cellColour(tt.v, tt.lo, tt.hi, tt.div); got != tt.want {
			t.Errorf("cellColour(%v,%v,%v,%v) = %s, want %s", tt.v, tt.lo, tt.hi, tt.div, got, tt.want)
		}
	}
}

func TestRenderUnknownFormat(t *testing.T) {
	if err := Render(io.Discard, sampleDoc(), "pdf"); err == nil {
		t.Error("want an error for an unknown format")
	}
}
