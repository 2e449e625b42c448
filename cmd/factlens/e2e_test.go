package main

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
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
	for _, tag := range []string{"<svg", "<rect", "<table", "<polyline", "<circle"} {
		want := strings.Count(string(src), tag)
		if got := strings.Count(dom, tag); got != want {
			t.Errorf("browser DOM has %d %s elements, the file %d", got, tag, want)
		}
	}
	if regexp.MustCompile(`(?i)<parsererror`).MatchString(dom) {
		t.Error("browser reported a parser error")
	}
}

// miniHub serves one repository the way the Hub's resolve endpoint does for
// plain (non-LFS) files: X-Repo-Commit, an ETag, and the body; 404 with
// X-Error-Code for anything else. Loopback only.
func miniHub(t *testing.T, repo, commit string, files map[string][]byte) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		prefix := "/" + repo + "/resolve/"
		rest, ok := strings.CutPrefix(r.URL.Path, prefix)
		if !ok {
			w.Header().Set("X-Error-Code", "RepoNotFound")
			http.Error(w, "Repository not found", http.StatusNotFound)
			return
		}
		rev, file, _ := strings.Cut(rest, "/")
		if rev != "main" && rev != commit {
			w.Header().Set("X-Error-Code", "RevisionNotFound")
			http.Error(w, "Revision not found", http.StatusNotFound)
			return
		}
		w.Header().Set("X-Repo-Commit", commit)
		data, ok := files[file]
		if !ok {
			w.Header().Set("X-Error-Code", "EntryNotFound")
			http.Error(w, "Entry not found", http.StatusNotFound)
			return
		}
		sum := sha1.Sum([]byte(fmt.Sprintf("blob %d\x00%s", len(data), data))) // git's blob id, as the Hub's ETag
		w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:])+`"`)
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		if r.Method == http.MethodHead {
			return
		}
		w.Write(data)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestEndToEnd builds the binary and runs every command as a user would:
// download from a (loopback) Hub, then inspect, tokenize, run, cache and the
// activation report in every format, the HTML one rendered by Chromium.
func TestEndToEnd(t *testing.T) {
	bin := buildBinary(t)
	dir := tinyCheckpoint(t)
	files := map[string][]byte{}
	for _, f := range []string{"config.json", "model.safetensors", "vocab.json", "merges.txt"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = b
	}
	const commit = "0123456789abcdef0123456789abcdef01234567"
	hub := miniHub(t, "factlens/tiny", commit, files)
	cache := t.TempDir()
	env := []string{"HF_ENDPOINT=" + hub.URL, "HF_HUB_CACHE=" + cache, "HF_HOME=" + cache}

	withEnv := func(extra []string, args ...string) outcome {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(append(os.Environ(), env...), extra...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return outcome{code, stdout.String(), stderr.String()}
	}
	out := withEnv(nil, "download", "factlens/tiny")
	if out.code != 0 {
		t.Fatalf("download: exit %d: %s", out.code, out.stderr)
	}
	snapshot := filepath.Join(cache, "models--factlens--tiny", "snapshots", commit)
	if !strings.Contains(out.stdout, snapshot) || !strings.Contains(out.stdout, commit) {
		t.Errorf("download printed %q, want the snapshot folder %s", out.stdout, snapshot)
	}
	// Offline, the cached model serves every later command.
	offline := []string{"HF_HUB_OFFLINE=1"}
	out = withEnv(offline, "inspect", "--model", "factlens/tiny", "--format", "json")
	if out.code != 0 || !strings.Contains(out.stdout, commit) {
		t.Fatalf("inspect offline: exit %d: %s\n%s", out.code, out.stderr, out.stdout)
	}

	steps := [][]string{
		{"tokenize", "--model", "factlens/tiny", "Michael Jordan plays the sport of"},
		{"run", "--model", "factlens/tiny", "--format", "md", "Michael Jordan plays the sport of"},
		{"run", "--model", "factlens/tiny", "--processing", "tl", "--prepend-bos", "--format", "json", "Michael Jordan"},
		{"cache", "--model", "factlens/tiny", "--out", filepath.Join(t.TempDir(), "acts.safetensors"), "Michael Jordan"},
	}
	corpus, saeDir := shakespeareCorpus(t, 100), filepath.Join(t.TempDir(), "sae")
	steps = append(steps,
		[]string{"sae", "train", "--model", "factlens/tiny", "--hook", "blocks.1.hook_resid_pre", "--corpus", corpus, "--out", saeDir,
			"--k", "4", "--expansion", "2", "--batch", "64", "--tokens", "1280", "--context", "32", "--buffer", "512", "--norm-batches", "1"},
		[]string{"sae", "eval", "--model", "factlens/tiny", "--sae", saeDir, "--corpus", corpus, "--windows", "2"},
		[]string{"sae", "features", "--model", "factlens/tiny", "--sae", saeDir, "--format", "md", "Michael Jordan"})
	for _, format := range []string{"text", "json", "md"} {
		steps = append(steps, []string{"activations", "--model", "factlens/tiny", "--format", format, "Michael Jordan plays the sport of"})
	}
	steps = append(steps, []string{"dla", "--model", "factlens/tiny", "--format", "md", "--target", " basketball", "--contrast", " baseball", "Michael Jordan plays the sport of"})
	for _, args := range steps {
		if out := withEnv(offline, args...); out.code != 0 || (args[0] != "cache" && out.stdout == "") {
			t.Errorf("%v: exit %d, %d bytes out: %s", args, out.code, len(out.stdout), out.stderr)
		}
	}

	html := filepath.Join(t.TempDir(), "report.html")
	out = withEnv(offline, "activations", "--model", "factlens/tiny", "--format", "html", "--out", html, "Michael Jordan plays the sport of")
	if out.code != 0 {
		t.Fatalf("activations html: exit %d: %s", out.code, out.stderr)
	}
	dom, _ := renderInChromium(t, html)
	checkRendered(t, html, dom)
	if !strings.Contains(dom, "Logit lens") || !strings.Contains(dom, "&nbsp;Jordan") && !strings.Contains(dom, " Jordan") {
		t.Error("rendered report lacks its sections")
	}

	// An analysis report: a causal trace's heatmaps, rendered by the browser.
	traceHTML := filepath.Join(t.TempDir(), "trace.html")
	out = withEnv(offline, "trace", "--model", "factlens/tiny", "--subject", "Michael Jordan", "--noise-std", "0.5", "--samples", "2",
		"--format", "html", "--out", traceHTML, "Michael Jordan plays the sport of")
	if out.code != 0 {
		t.Fatalf("trace html: exit %d: %s", out.code, out.stderr)
	}
	dom, _ = renderInChromium(t, traceHTML)
	checkRendered(t, traceHTML, dom)
	if !strings.Contains(dom, "Causal trace") || !strings.Contains(dom, "Hidden states") {
		t.Error("rendered trace lacks its sections")
	}
}
