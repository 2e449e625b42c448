package main

import (
	"io"
	"os"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progressFor returns a Hub progress callback that draws a bar on stderr
// when stderr is a terminal and --quiet is off, and nil (silence) otherwise,
// so pipes and CI logs never fill with carriage returns.
// schollz/progressbar handles terminal widths, rates and ETA for us.
func (a *app) progressFor() func(file string, size int64) io.WriteCloser {
	if a.quiet {
		return nil
	}
	f, ok := a.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return func(file string, size int64) io.WriteCloser {
		bar := progressbar.NewOptions64(size,
			progressbar.OptionSetWriter(f),
			progressbar.OptionSetDescription(file),
			progressbar.OptionShowBytes(true),
			progressbar.OptionThrottle(100_000_000),
			progressbar.OptionClearOnFinish(),
		)
		return barCloser{bar}
	}
}

type barCloser struct{ *progressbar.ProgressBar }

func (b barCloser) Close() error { return b.Finish() }

// newBar returns a bar counting n steps on a terminal, or nil; callers use
// step(bar) which tolerates nil.
func (a *app) newBar(n int, what string) *progressbar.ProgressBar {
	if a.quiet {
		return nil
	}
	f, ok := a.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return progressbar.NewOptions(n, progressbar.OptionSetWriter(f), progressbar.OptionSetDescription(what),
		progressbar.OptionClearOnFinish(), progressbar.OptionShowCount())
}

func step(bar *progressbar.ProgressBar) {
	if bar != nil {
		_ = bar.Add(1)
	}
}
