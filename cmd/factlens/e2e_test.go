package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// buildBinary compiles factlens once per test binary into a temp folder.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "factlens")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runBinary runs the real binary as a user would, offline, with a clean cache.
func runBinary(t *testing.T, bin string, stdin string, args ...string) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cache := t.TempDir()
	cmd.Env = append(os.Environ(), "HF_HUB_OFFLINE=1", "HF_HOME="+cache, "HF_HUB_CACHE="+cache)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %v: %v", args, err)
	}
	return outcome{code, stdout.String(), stderr.String()}
}

// renderInChromium loads an HTML file in headless Chromium and returns the
// DOM the browser built and a screenshot path. CI installs Chromium (.ci/run);
// elsewhere the test is skipped when it is missing.
func renderInChromium(t *testing.T, htmlPath string) (dom string, png string) {
	t.Helper()
	browser, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed; .ci/run should have installed it")
		}
		t.Skip("chromium not installed")
	}
	abs, _ := filepath.Abs(htmlPath)
	flags := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"}
	run := func(extra ...string) []byte {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		args := append(append(slicesClone(flags), "--user-data-dir="+t.TempDir()), extra...)
		args = append(args, "file://"+abs)
		out, err := exec.CommandContext(ctx, browser, args...).Output()
		if err != nil {
			t.Fatalf("chromium %v: %v", extra, err)
		}
		return out
	}
	dom = string(run("--dump-dom"))
	png = filepath.Join(t.TempDir(), "page.png")
	run("--screenshot="+png, "--window-size=1280,2000")
	if st, err := os.Stat(png); err != nil || st.Size() < 1000 {
		t.Fatalf("chromium wrote no screenshot: %v", err)
	}
	return dom, png
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// checkRendered compares what the browser built with the file we wrote: the
// same number of SVG figures and shapes, so no figure was dropped by a
// parse error.
func checkRendered(t *testing.T, htmlPath, dom string) {
	t.Helper()
	src, err := os.ReadFile(htmlPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"<svg", "<rect", "<table", "<polyline"} {
		want := strings.Count(string(src), tag)
		if got := strings.Count(dom, tag); got != want {
			t.Errorf("browser DOM has %d %s elements, the file %d", got, tag, want)
		}
	}
	if regexp.MustCompile(`(?i)<parsererror`).MatchString(dom) {
		t.Error("browser reported a parser error")
	}
}
