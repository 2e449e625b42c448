package main

import (
	"encoding/json"
	"io"

	"github.com/factlens/factlens/cmd/factlens/report"
	"github.com/factlens/factlens/weights"
)

// writeOutput sends what write produces to path, or to stdout when path is
// "" or "-". A file is written through weights.WriteFileAtomic, so a failure
// never leaves a half-written report.
func writeOutput(stdout io.Writer, path string, write func(io.Writer) error) error {
	if path == "" || path == "-" {
		return write(stdout)
	}
	return weights.WriteFileAtomic(path, write)
}

// renderResult writes result as JSON, or doc() in a report format.
func renderResult(w io.Writer, format string, result any, doc func() *report.Document) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(result)
	}
	return report.Render(w, doc(), format)
}

// checkFormat validates a --format value against the allowed set.
func checkFormat(format string, allowed ...string) error {
	for _, a := range allowed {
		if format == a {
			return nil
		}
	}
	return usagef("unknown --format %q (want one of %v)", format, allowed)
}
