package weights

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	commitA = "0123456789abcdef0123456789abcdef01234567"
	commitB = "89abcdef0123456789abcdef0123456789abcdef"
)

func TestHubFromEnv(t *testing.T) {
	home := t.TempDir()
	tokenFile := filepath.Join(home, "hfhome", "token")
	os.MkdirAll(filepath.Dir(tokenFile), 0o755)
	os.WriteFile(tokenFile, []byte("hf_fromfile\n"), 0o600)
	otherToken := filepath.Join(home, "other-token")
	os.WriteFile(otherToken, []byte("  hf_other \r\n"), 0o600)

	tests := []struct {
		name                         string
		env                          map[string]string
		endpoint, cache, token, from string
		offline                      bool
	}{
		{name: "defaults", env: map[string]string{"HOME": home},
			endpoint: "https://huggingface.co", cache: filepath.Join(home, ".cache/huggingface/hub")},
		{name: "xdg", env: map[string]string{"HOME": home, "XDG_CACHE_HOME": "/xdg"},
			endpoint: "https://huggingface.co", cache: "/xdg/huggingface/hub"},
		{name: "hf_home and its token file", env: map[string]string{"HOME": home, "HF_HOME": filepath.Join(home, "hfhome")},
			endpoint: "https://huggingface.co", cache: filepath.Join(home, "hfhome/hub"), token: "hf_fromfile", from: "token file " + tokenFile},
		{name: "tilde", env: map[string]string{"HOME": home, "HF_HOME": "~/hfhome"},
			endpoint: "https://huggingface.co", cache: filepath.Join(home, "hfhome/hub"), token: "hf_fromfile", from: "token file " + tokenFile},
		{name: "hub cache wins", env: map[string]string{"HOME": home, "HF_HOME": "/h", "HF_HUB_CACHE": "/c", "HUGGINGFACE_HUB_CACHE": "/legacy"},
			endpoint: "https://huggingface.co", cache: "/c"},
		{name: "legacy cache", env: map[string]string{"HOME": home, "HUGGINGFACE_HUB_CACHE": "/legacy"},
			endpoint: "https://huggingface.co", cache: "/legacy"},
		{name: "endpoint slash", env: map[string]string{"HOME": home, "HF_ENDPOINT": "https://hf-mirror.example/"},
			endpoint: "https://hf-mirror.example", cache: filepath.Join(home, ".cache/huggingface/hub")},
		{name: "HF_TOKEN over file", env: map[string]string{"HOME": home, "HF_HOME": filepath.Join(home, "hfhome"), "HF_TOKEN": " hf_env\n"},
			endpoint: "https://huggingface.co", cache: filepath.Join(home, "hfhome/hub"), token: "hf_env", from: "HF_TOKEN"},
		{name: "legacy token var", env: map[string]string{"HOME": home, "HUGGING_FACE_HUB_TOKEN": "hf_legacy"},
			endpoint: "https://huggingface.co", cache: filepath.Join(home, ".cache/huggingface/hub"), token: "hf_legacy", from: "HUGGING_FACE_HUB_TOKEN"},
		{name: "token path", env: map[string]string{"HOME": home, "HF_TOKEN_PATH": otherToken},
			endpoint: "https://huggingface.co", cache: filepath.Join(home, ".cache/huggingface/hub"), token: "hf_other", from: "token file " + otherToken},
		{name: "offline 1", env: map[string]string{"HOME": home, "HF_HUB_OFFLINE": "1"},
			endpoint: "https://huggingface.co", cache: filepath.Join(home, ".cache/huggingface/hub"), offline: true},
		{name: "offline yes", env: map[string]string{"HOME": home, "HF_HUB_OFFLINE": "yes"},
			endpoint: "https://huggingface.co", cache: filepath.Join(home, ".cache/huggingface/hub"), offline: true},
		{name: "offline 0", env: map[string]string{"HOME": home, "HF_HUB_OFFLINE": "0"},
			endpoint: "https://huggingface.co", cache: filepath.Join(home, ".cache/huggingface/hub")},
		{name: "transformers offline", env: map[string]string{"HOME": home, "TRANSFORMERS_OFFLINE": "TRUE"},
			endpoint: "https://huggingface.co", cache: filepath.Join(home, ".cache/huggingface/hub"), offline: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := HubFromEnv(func(k string) string { return tc.env[k] })
			if h.Endpoint != tc.endpoint || h.CacheDir != tc.cache || h.Token != tc.token || h.tokenFrom != tc.from || h.Offline != tc.offline {
				t.Errorf("got endpoint %q cache %q token %q from %q offline %v\nwant endpoint %q cache %q token %q from %q offline %v",
					h.Endpoint, h.CacheDir, h.Token, h.tokenFrom, h.Offline, tc.endpoint, tc.cache, tc.token, tc.from, tc.offline)
			}
		})
	}
}

// The fake Hub's ETags must be git blob ids; the values below are from
// `printf '…' | git hash-object --stdin` (git 2.39).
func TestFakeHubGitBlobSHA1(t *testing.T) {
	for in, want := range map[string]string{
		"hello\n":                "ce013625030ba8dba906f756967f9e9ca394464a",
		"":                       "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
		`{"model_type": "gpt2"}`: "7eb84e812bad01767dcf9cf8a2d84ef428949cad",
	} {
		if got := fakeGitBlobSHA1([]byte(in)); got != want {
			t.Errorf("git blob sha1 of %q = %s, want %s", in, got, want)
		}
	}
	// `printf 'hello\n' | sha256sum`
	if got := fakeSHA256([]byte("hello\n")); got != "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03" {
		t.Errorf("sha256 = %s", got)
	}
}

// Expected URLs are Python's urllib.parse.quote, as hf_hub_url applies it:
// python3 -c 'from urllib.parse import quote; print(quote("refs/pr/1", safe=""))' etc.
func TestHubFileURL(t *testing.T) {
	h := &Hub{Endpoint: "https://huggingface.co/"}
	tests := []struct{ revision, file, want string }{
		{"main", "config.json", "https://huggingface.co/org/m/resolve/main/config.json"},
		{"refs/pr/1", "config.json", "https://huggingface.co/org/m/resolve/refs%2Fpr%2F1/config.json"},
		{"v1.0+rc", "onnx/model.onnx", "https://huggingface.co/org/m/resolve/v1.0%2Brc/onnx/model.onnx"},
		{"a b~c_d.e-f", "dir/a b+c.json", "https://huggingface.co/org/m/resolve/a%20b~c_d.e-f/dir/a%20b%2Bc.json"},
		{"main", "é/x", "https://huggingface.co/org/m/resolve/main/%C3%A9/x"},
	}
	for _, tc := range tests {
		if got := h.fileURL("org/m", tc.revision, tc.file); got != tc.want {
			t.Errorf("fileURL(%q, %q) = %s, want %s", tc.revision, tc.file, got, tc.want)
		}
	}
}

func TestNormalizeEtag(t *testing.T) {
	for in, want := range map[string]string{
		`"abc123"`:   "abc123",
		`W/"abc123"`: "abc123",
		`abc123`:     "abc123",
		` "x" `:      "x",
	} {
		if got := hubNormalizeEtag(in); got != want {
			t.Errorf("hubNormalizeEtag(%q) = %q, want %q", in, got, want)
		}
	}
}

// Cases from huggingface_hub's validate_repo_id docstring and tests.
func TestValidRepoID(t *testing.T) {
	for id, want := range map[string]bool{
		"foo": true, "foo/bar": true, "123": true, "Foo-BAR_foo.bar123": true,
		"openai-community/gpt2": true, "distilbert/distilgpt2": true, "gpt2": true,
		"datasets/foo/bar": false, ".repo_id": false, "foo--bar": false, "foo.git": false,
		"other..repo..id": false, "repo-": false, "org/": false, "/repo": false, "": false,
		"café": false, "a b": false, strings.Repeat("a", 96): true, strings.Repeat("a", 97): false,
		"./missing/dir": false,
	} {
		if got := ValidRepoID(id); got != want {
			t.Errorf("ValidRepoID(%q) = %v, want %v", id, got, want)
		}
	}
}

// checkCacheEntry verifies one file is cached as huggingface_hub caches it.
func checkCacheEntry(t *testing.T, h *Hub, repo, revision, commit, file string, data []byte, etag string) {
	t.Helper()
	storage := filepath.Join(h.CacheDir, "models--"+strings.ReplaceAll(repo, "/", "--"))
	pointer := filepath.Join(storage, "snapshots", commit, filepath.FromSlash(file))
	target, err := os.Readlink(pointer)
	if err != nil {
		t.Fatalf("snapshot entry is not a symlink: %v", err)
	}
	wantTarget := strings.Repeat("../", 2+strings.Count(file, "/")) + "blobs/" + etag
	if target != wantTarget {
		t.Errorf("symlink %s -> %s, want %s", pointer, target, wantTarget)
	}
	got, err := os.ReadFile(filepath.Join(storage, "blobs", etag))
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("blob %s: %d bytes, err %v; want %d bytes", etag, len(got), err, len(data))
	}
	if revision != commit {
		ref, err := os.ReadFile(filepath.Join(storage, "refs", revision))
		if err != nil || string(ref) != commit {
			t.Errorf("refs/%s = %q (%v), want %q without newline", revision, ref, err, commit)
		}
	}
	if _, err := os.Stat(filepath.Join(storage, "blobs", etag+".incomplete")); err == nil {
		t.Errorf("%s.incomplete left behind", etag)
	}
}

func TestDownloadLFSViaCDN(t *testing.T) {
	f := newFakeHub(t)
	weights := fakeBytes(300_000, 1)
	f.addRepo("org/model", commitA, map[string]fakeHubFile{"model.safetensors": {data: weights, lfs: true}})
	h := f.newHub("hf_secret")

	path, commit, err := h.Download(context.Background(), "org/model", "", "model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if commit != commitA {
		t.Errorf("commit %s, want %s", commit, commitA)
	}
	if want := filepath.Join(h.CacheDir, "models--org--model", "snapshots", commitA, "model.safetensors"); path != want {
		t.Errorf("path %s, want %s", path, want)
	}
	checkCacheEntry(t, h, "org/model", "main", commitA, "model.safetensors", weights, fakeSHA256(weights))
	if _, err := os.Stat(filepath.Join(h.CacheDir, ".locks", "models--org--model", fakeSHA256(weights)+".lock")); err != nil {
		t.Errorf("no lock file where huggingface_hub takes it: %v", err)
	}

	reqs := f.take()
	if len(reqs) != 2 {
		t.Fatalf("requests %+v, want HEAD on the Hub then GET on the CDN", reqs)
	}
	if r := reqs[0]; r.host != "hub" || r.method != "HEAD" || r.path != "/org/model/resolve/main/model.safetensors" || r.auth != "Bearer hf_secret" {
		t.Errorf("first request %+v", r)
	}
	if r := reqs[1]; r.host != "cdn" || r.method != "GET" || r.auth != "" || r.rangeHeader != "" {
		t.Errorf("second request %+v: want a GET on the CDN without Authorization", r)
	}
}

func TestDownloadRegularFileRelativeRedirect(t *testing.T) {
	f := newFakeHub(t)
	f.resolveCache = true
	config := []byte(`{"model_type": "gpt2"}`)
	r := f.addRepo("org/private", commitA, map[string]fakeHubFile{"sub/config.json": {data: config}})
	r.private, r.approved = true, "hf_ok"
	h := f.newHub("hf_ok")

	_, commit, err := h.Download(context.Background(), "org/private", "main", "sub/config.json")
	if err != nil {
		t.Fatal(err)
	}
	// A regular file's blob is named by its git blob sha1.
	checkCacheEntry(t, h, "org/private", "main", commit, "sub/config.json", config, "7eb84e812bad01767dcf9cf8a2d84ef428949cad")
	for _, r := range f.take() {
		if r.auth != "Bearer hf_ok" {
			t.Errorf("%s %s on the Hub's own host without the token", r.method, r.path)
		}
		if r.method == "GET" && !strings.HasPrefix(r.path, "/api/resolve-cache/") {
			t.Errorf("GET %s: want the relative redirect's target", r.path)
		}
	}
}

func TestDownloadCachedAndCommitShortcut(t *testing.T) {
	f := newFakeHub(t)
	data := fakeBytes(5000, 2)
	f.addRepo("org/m", commitA, map[string]fakeHubFile{"model.safetensors": {data: data, lfs: true}, "vocab.json": {data: []byte("{}")}})
	h := f.newHub("")
	ctx := context.Background()
	first, _, err := h.Download(ctx, "org/m", "main", "model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	f.take()

	second, _, err := h.Download(ctx, "org/m", "main", "model.safetensors")
	if err != nil || second != first {
		t.Fatalf("second download: %s, %v", second, err)
	}
	if reqs := f.take(); len(reqs) != 1 || reqs[0].method != "HEAD" {
		t.Errorf("cached file: requests %+v, want one HEAD", reqs)
	}

	// A commit sha that is cached needs no request at all.
	third, commit, err := h.Download(ctx, "org/m", commitA, "model.safetensors")
	if err != nil || third != first || commit != commitA {
		t.Fatalf("by commit: %s %s %v", third, commit, err)
	}
	if reqs := f.take(); len(reqs) != 0 {
		t.Errorf("cached commit: requests %+v, want none", reqs)
	}

	// By commit, not cached: downloaded, and no ref is written for a sha.
	if _, _, err := h.Download(ctx, "org/m", commitA, "vocab.json"); err != nil {
		t.Fatal(err)
	}
	refs, _ := os.ReadDir(filepath.Join(h.CacheDir, "models--org--m", "refs"))
	if len(refs) != 1 || refs[0].Name() != "main" {
		t.Errorf("refs %v, want only main", refs)
	}
}

func TestDownloadErrors(t *testing.T) {
	f := newFakeHub(t)
	files := map[string]fakeHubFile{"config.json": {data: []byte("{}")}}
	f.addRepo("org/public", commitA, files)
	gated := f.addRepo("org/gated", commitA, files)
	gated.gated, gated.approved = true, "hf_approved"

	tests := []struct {
		name, token, repo, revision, file string
		kind                              error
		status                            int
		says                              []string
	}{
		{"missing repo without token", "", "org/nope", "main", "config.json", ErrRepoNotFound, 401,
			[]string{"does not exist, or is private", "no token is set", "HF_TOKEN"}},
		{"missing repo with token", "hf_x", "org/nope", "main", "config.json", ErrRepoNotFound, 404,
			[]string{"does not exist", "the token from HF_TOKEN has access"}},
		{"gated without token", "", "org/gated", "main", "config.json", ErrGatedRepo, 401,
			[]string{"gated", "no token was sent", fakeEndpoint + "/org/gated", "HF_TOKEN"}},
		{"gated, token not approved", "hf_x", "org/gated", "main", "config.json", ErrGatedRepo, 403,
			[]string{"gated", "the token from HF_TOKEN", "request access at " + fakeEndpoint + "/org/gated"}},
		{"missing revision", "", "org/public", "v9", "config.json", ErrRevisionNotFound, 404,
			[]string{`revision "v9" does not exist`}},
		{"missing file", "", "org/public", "main", "model.safetensors", ErrEntryNotFound, 404,
			[]string{"no such file", "model.safetensors"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := f.newHub(tc.token)
			if tc.token != "" {
				h.tokenFrom = "HF_TOKEN"
			}
			_, _, err := h.Download(context.Background(), tc.repo, tc.revision, tc.file)
			var herr *HubError
			if !errors.As(err, &herr) || !errors.Is(err, tc.kind) || herr.Status != tc.status {
				t.Fatalf("got %v (%T), want %v with HTTP %d", err, err, tc.kind, tc.status)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			if entries, _ := os.ReadDir(filepath.Join(h.CacheDir, "models--"+strings.ReplaceAll(tc.repo, "/", "--"), "snapshots")); len(entries) != 0 {
				t.Errorf("snapshots/ has %v after an error", entries)
			}
		})
	}

	// The approved token gets the file, and the absence of a file is
	// remembered as huggingface_hub remembers it.
	h := f.newHub("hf_approved")
	if _, _, err := h.Download(context.Background(), "org/gated", "main", "config.json"); err != nil {
		t.Fatal(err)
	}
	h = f.newHub("")
	h.Download(context.Background(), "org/public", "main", "tokenizer.json")
	storage := filepath.Join(h.CacheDir, "models--org--public")
	if _, err := os.Stat(filepath.Join(storage, ".no_exist", commitA, "tokenizer.json")); err != nil {
		t.Errorf("no .no_exist marker: %v", err)
	}
	if ref, _ := os.ReadFile(filepath.Join(storage, "refs", "main")); string(ref) != commitA {
		t.Errorf("refs/main = %q after EntryNotFound", ref)
	}
	f.take()
	_, _, err := h.Download(context.Background(), "org/public", commitA, "tokenizer.json")
	if !errors.Is(err, ErrEntryNotFound) || len(f.take()) != 0 {
		t.Errorf("known-absent file at a commit: %v, want ErrEntryNotFound without a request", err)
	}
}

func TestDownloadRejectsUnsafeNames(t *testing.T) {
	h := &Hub{CacheDir: t.TempDir(), Client: &http.Client{Transport: failTransport{t}}}
	for _, tc := range []struct{ repo, revision, file string }{
		{"org/m", "main", "../escape"},
		{"org/m", "main", "/etc/passwd"},
		{"org/m", "../x", "config.json"},
		{"org/../m", "main", "config.json"},
		{"a/b/c", "main", "config.json"},
	} {
		if _, _, err := h.Download(context.Background(), tc.repo, tc.revision, tc.file); err == nil {
			t.Errorf("Download(%q, %q, %q) succeeded", tc.repo, tc.revision, tc.file)
		}
	}
}

// failTransport fails the test on any request: the code under test must not
// touch the network.
type failTransport struct{ t *testing.T }

func (f failTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	f.t.Errorf("unexpected request %s %s", r.Method, r.URL)
	return nil, errors.New("network forbidden in this test")
}

// downTransport is a network that is down.
type downTransport struct{}

func (downTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("dial tcp: connect: network is unreachable")
}

func TestDownloadResumesWithRange(t *testing.T) {
	f := newFakeHub(t)
	data := fakeBytes(100_000, 3)
	f.addRepo("org/m", commitA, map[string]fakeHubFile{"model.safetensors": {data: data, lfs: true}})
	h := f.newHub("")
	etag := fakeSHA256(data)
	blobs := filepath.Join(h.CacheDir, "models--org--m", "blobs")
	os.MkdirAll(blobs, 0o755)
	os.WriteFile(filepath.Join(blobs, etag+".incomplete"), data[:40_000], 0o644)

	if _, _, err := h.Download(context.Background(), "org/m", "main", "model.safetensors"); err != nil {
		t.Fatal(err)
	}
	checkCacheEntry(t, h, "org/m", "main", commitA, "model.safetensors", data, etag)
	reqs := f.take()
	if len(reqs) != 2 || reqs[1].rangeHeader != "bytes=40000-" {
		t.Errorf("requests %+v, want a GET with Range bytes=40000-", reqs)
	}
}

func TestDownloadCutThenResumedOnNextCall(t *testing.T) {
	f := newFakeHub(t)
	data := fakeBytes(200_000, 4)
	f.addRepo("org/m", commitA, map[string]fakeHubFile{"model.safetensors": {data: data, lfs: true}})
	f.cdnFault = func(w http.ResponseWriter, r *http.Request, data []byte, attempt int) bool {
		if attempt == 1 {
			fakeCutAfter(w, r, data, 70_000)
		}
		return false
	}
	h := f.newHub("")
	h.maxRetries = -1 // fail at once, as a killed process would
	etag := fakeSHA256(data)
	storage := filepath.Join(h.CacheDir, "models--org--m")

	_, _, err := h.Download(context.Background(), "org/m", "main", "model.safetensors")
	if !errors.Is(err, ErrHubUnreachable) || !strings.Contains(err.Error(), "run again to resume") {
		t.Fatalf("cut connection: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(storage, "blobs", etag+".incomplete")); err != nil || fi.Size() != 70_000 {
		t.Fatalf("partial file: %v, %v; want 70000 bytes kept", fi, err)
	}
	if _, err := os.Stat(filepath.Join(storage, "snapshots")); !os.IsNotExist(err) {
		t.Errorf("snapshots/ exists after a failed download: %v", err)
	}
	f.take()

	if _, _, err := h.Download(context.Background(), "org/m", "main", "model.safetensors"); err != nil {
		t.Fatal(err)
	}
	checkCacheEntry(t, h, "org/m", "main", commitA, "model.safetensors", data, etag)
	if reqs := f.take(); len(reqs) != 2 || reqs[1].rangeHeader != "bytes=70000-" {
		t.Errorf("requests %+v, want the GET to resume at 70000", reqs)
	}
}

func TestDownloadCutResumedInline(t *testing.T) {
	f := newFakeHub(t)
	data := fakeBytes(200_000, 5)
	f.addRepo("org/m", commitA, map[string]fakeHubFile{"model.safetensors": {data: data, lfs: true}})
	f.cdnFault = func(w http.ResponseWriter, r *http.Request, data []byte, attempt int) bool {
		if attempt <= 3 { // every attempt makes some progress, then breaks
			fakeCutAfter(w, r, data, 30_000)
		}
		return false
	}
	h := f.newHub("")
	if _, _, err := h.Download(context.Background(), "org/m", "main", "model.safetensors"); err != nil {
		t.Fatal(err)
	}
	checkCacheEntry(t, h, "org/m", "main", commitA, "model.safetensors", data, fakeSHA256(data))
	var ranges []string
	for _, r := range f.take() {
		if r.method == "GET" {
			ranges = append(ranges, r.rangeHeader)
		}
	}
	if want := []string{"", "bytes=30000-", "bytes=60000-", "bytes=90000-"}; fmt.Sprint(ranges) != fmt.Sprint(want) {
		t.Errorf("GET ranges %q, want %q", ranges, want)
	}
}

func TestDownloadRejectsWrongChecksum(t *testing.T) {
	f := newFakeHub(t)
	data := fakeBytes(50_000, 6)
	f.addRepo("org/m", commitA, map[string]fakeHubFile{"model.safetensors": {data: data, lfs: true}})
	f.cdnFault = func(w http.ResponseWriter, r *http.Request, data []byte, attempt int) bool {
		if attempt > 1 {
			return false
		}
		bad := bytes.Clone(data)
		bad[12345] ^= 1
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(bad))
		return true
	}
	h := f.newHub("")
	storage := filepath.Join(h.CacheDir, "models--org--m")
	etag := fakeSHA256(data)

	_, _, err := h.Download(context.Background(), "org/m", "main", "model.safetensors")
	if !errors.Is(err, ErrBadDownload) || !strings.Contains(err.Error(), etag) {
		t.Fatalf("corrupt download: %v", err)
	}
	for _, p := range []string{"blobs/" + etag, "blobs/" + etag + ".incomplete", "snapshots"} {
		if _, err := os.Stat(filepath.Join(storage, p)); !os.IsNotExist(err) {
			t.Errorf("%s exists after a corrupt download", p)
		}
	}
	if _, _, err := h.Download(context.Background(), "org/m", "main", "model.safetensors"); err != nil {
		t.Fatal(err)
	}
	checkCacheEntry(t, h, "org/m", "main", commitA, "model.safetensors", data, etag)
}

func TestDownloadRepairsShortBlob(t *testing.T) {
	f := newFakeHub(t)
	data := fakeBytes(20_000, 7)
	f.addRepo("org/m", commitA, map[string]fakeHubFile{"model.safetensors": {data: data, lfs: true}})
	h := f.newHub("")
	ctx := context.Background()
	if _, _, err := h.Download(ctx, "org/m", "main", "model.safetensors"); err != nil {
		t.Fatal(err)
	}
	blob := filepath.Join(h.CacheDir, "models--org--m", "blobs", fakeSHA256(data))
	os.Truncate(blob, 1000) // as an old buggy writer may have left it
	if _, _, err := h.Download(ctx, "org/m", "main", "model.safetensors"); err != nil {
		t.Fatal(err)
	}
	checkCacheEntry(t, h, "org/m", "main", commitA, "model.safetensors", data, fakeSHA256(data))
}

func TestDownloadConcurrent(t *testing.T) {
	f := newFakeHub(t)
	data := fakeBytes(400_000, 8)
	f.addRepo("org/m", commitA, map[string]fakeHubFile{"model.safetensors": {data: data, lfs: true}})
	f.cdnFault = func(w http.ResponseWriter, r *http.Request, data []byte, attempt int) bool {
		// Slow enough that every caller is waiting while the first downloads.
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		for off := 0; off < len(data); off += 50_000 {
			w.Write(data[off:min(off+50_000, len(data))])
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return true
			case <-time.After(30 * time.Millisecond):
			}
		}
		return true
	}
	// Two Hub values on one cache stand for two processes.
	h1 := f.newHub("")
	h2 := f.newHub("")
	h2.CacheDir = h1.CacheDir

	var wg sync.WaitGroup
	paths := make([]string, 4)
	errs := make([]error, 4)
	for i := range paths {
		h := h1
		if i%2 == 1 {
			h = h2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i], _, errs[i] = h.Download(context.Background(), "org/m", "main", "model.safetensors")
		}()
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil || paths[i] != paths[0] {
			t.Errorf("caller %d: %s, %v", i, paths[i], errs[i])
		}
	}
	checkCacheEntry(t, h1, "org/m", "main", commitA, "model.safetensors", data, fakeSHA256(data))
	gets := 0
	for _, r := range f.take() {
		if r.method == "GET" {
			gets++
		}
	}
	if gets != 1 {
		t.Errorf("%d GETs for one blob, want 1", gets)
	}
}

func TestDownloadCancelKeepsPartial(t *testing.T) {
	f := newFakeHub(t)
	data := fakeBytes(1_000_000, 9)
	f.addRepo("org/m", commitA, map[string]fakeHubFile{"model.safetensors": {data: data, lfs: true}})
	f.cdnFault = func(w http.ResponseWriter, r *http.Request, data []byte, attempt int) bool {
		if attempt > 1 {
			return false
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		for off := 0; off < len(data); off += 10_000 {
			w.Write(data[off : off+10_000])
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return true
			case <-time.After(20 * time.Millisecond):
			}
		}
		return true
	}
	h := f.newHub("")
	ctx, cancel := context.WithCancel(context.Background())
	var got bytes.Buffer
	h.Progress = func(file string, size int64) io.WriteCloser {
		return &progressSpy{buf: &got, onWrite: func(total int) {
			if total >= 30_000 {
				cancel()
			}
		}}
	}
	start := time.Now()
	_, _, err := h.Download(ctx, "org/m", "main", "model.safetensors")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled download: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("cancellation took %v", d)
	}
	storage := filepath.Join(h.CacheDir, "models--org--m")
	fi, err := os.Stat(filepath.Join(storage, "blobs", fakeSHA256(data)+".incomplete"))
	if err != nil || fi.Size() < 30_000 {
		t.Fatalf("partial file after cancel: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(storage, "snapshots")); !os.IsNotExist(err) {
		t.Errorf("snapshots/ exists after a cancelled download")
	}
	kept := fi.Size()
	f.take()

	h.Progress = nil
	if _, _, err := h.Download(context.Background(), "org/m", "main", "model.safetensors"); err != nil {
		t.Fatal(err)
	}
	checkCacheEntry(t, h, "org/m", "main", commitA, "model.safetensors", data, fakeSHA256(data))
	if reqs := f.take(); len(reqs) != 2 || reqs[1].rangeHeader != fmt.Sprintf("bytes=%d-", kept) {
		t.Errorf("requests %+v, want a GET resuming at %d", reqs, kept)
	}
}

type progressSpy struct {
	buf     *bytes.Buffer
	onWrite func(total int)
	closed  bool
}

func (p *progressSpy) Write(b []byte) (int, error) {
	p.buf.Write(b)
	if p.onWrite != nil {
		p.onWrite(p.buf.Len())
	}
	return len(b), nil
}

func (p *progressSpy) Close() error { p.closed = true; return nil }

func TestDownloadProgress(t *testing.T) {
	f := newFakeHub(t)
	data := fakeBytes(123_456, 10)
	f.addRepo("org/m", commitA, map[string]fakeHubFile{"model.safetensors": {data: data, lfs: true}})
	h := f.newHub("")
	etag := fakeSHA256(data)
	blobs := filepath.Join(h.CacheDir, "models--org--m", "blobs")
	os.MkdirAll(blobs, 0o755)
	os.WriteFile(filepath.Join(blobs, etag+".incomplete"), data[:23_456], 0o644)

	type call struct {
		file string
		size int64
		spy  *progressSpy
	}
	var calls []call
	h.Progress = func(file string, size int64) io.WriteCloser {
		spy := &progressSpy{buf: &bytes.Buffer{}}
		calls = append(calls, call{file, size, spy})
		return spy
	}
	for range 2 { // the second call is a cache hit: no progress
		if _, _, err := h.Download(context.Background(), "org/m", "main", "model.safetensors"); err != nil {
			t.Fatal(err)
		}
	}
	if len(calls) != 1 {
		t.Fatalf("%d progress calls, want 1", len(calls))
	}
	c := calls[0]
	if c.file != "org/m/model.safetensors" || c.size != 100_000 || c.spy.buf.Len() != 100_000 || !c.spy.closed ||
		!bytes.Equal(c.spy.buf.Bytes(), data[23_456:]) {
		t.Errorf("progress %q size %d got %d bytes, closed %v", c.file, c.size, c.spy.buf.Len(), c.spy.closed)
	}
}

func TestDownloadOffline(t *testing.T) {
	f := newFakeHub(t)
	data := fakeBytes(1000, 11)
	f.addRepo("org/m", commitA, map[string]fakeHubFile{"model.safetensors": {data: data, lfs: true}, "config.json": {data: []byte("{}")}}, "v1")
	online := f.newHub("")
	ctx := context.Background()
	want, _, err := online.Download(ctx, "org/m", "v1", "model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	h := &Hub{CacheDir: online.CacheDir, Offline: true, Client: &http.Client{Transport: failTransport{t}}}

	tests := []struct {
		name, repo, revision, file string
		kind                       error
		says                       string
	}{
		{"hit by tag", "org/m", "v1", "model.safetensors", nil, ""},
		{"hit by commit", "org/m", commitA, "model.safetensors", nil, ""},
		{"file not cached", "org/m", "v1", "config.json", ErrNotCached, "config.json is not in the cached snapshot"},
		{"revision not cached", "org/m", "main", "model.safetensors", ErrNotCached, `no record of revision "main"`},
		{"commit not cached", "org/m", commitB, "model.safetensors", ErrNotCached, "model.safetensors is not in the cached snapshot"},
		{"repo not cached", "org/other", "main", "config.json", ErrNotCached, "never downloaded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path, commit, err := h.Download(ctx, tc.repo, tc.revision, tc.file)
			if tc.kind == nil {
				if err != nil || path != want || commit != commitA {
					t.Errorf("got %s %s %v, want %s", path, commit, err, want)
				}
				return
			}
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.says) || !strings.Contains(err.Error(), "offline") {
				t.Errorf("got %v, want %v saying %q and offline", err, tc.kind, tc.says)
			}
		})
	}
}

func TestDownloadNetworkDownFallsBackToCache(t *testing.T) {
	f := newFakeHub(t)
	data := fakeBytes(1000, 12)
	f.addRepo("org/m", commitA, map[string]fakeHubFile{"model.safetensors": {data: data, lfs: true}})
	online := f.newHub("")
	want, _, err := online.Download(context.Background(), "org/m", "main", "model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	h := &Hub{Endpoint: fakeEndpoint, CacheDir: online.CacheDir, Client: &http.Client{Transport: downTransport{}}}
	got, commit, err := h.Download(context.Background(), "org/m", "main", "model.safetensors")
	if err != nil || got != want || commit != commitA {
		t.Fatalf("network down, file cached: %s %s %v", got, commit, err)
	}
	_, _, err = h.Download(context.Background(), "org/m", "main", "config.json")
	if !errors.Is(err, ErrHubUnreachable) {
		t.Fatalf("network down, file not cached: %v", err)
	}
	for _, s := range []string{"cannot reach " + fakeEndpoint, "network is unreachable", "HF_HUB_OFFLINE=1", "--model"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

// The cache below is laid out as huggingface_hub's hf_hub_download docstring
// shows it (julien-c/EsperBERTo-small, two snapshots sharing a blob), with a
// .no_exist marker as try_to_load_from_cache reads it; Python writes refs
// without a newline, a hand-written one may have one.
func TestReadsPythonCache(t *testing.T) {
	cache := t.TempDir()
	storage := filepath.Join(cache, "models--julien-c--EsperBERTo-small")
	const (
		oldCommit = "2439f60ef33a0d46d85da5001d52aeda5b00ce9f"
		newCommit = "bbc77c8132af1cc5cf678da3f1ddf2de43606d48"
		weights   = "403450e234d65943a7dcf7e05a771ce3c92faa84dd07db4ac20f592037a1e4bd"
		oldReadme = "d7edf6bd2a681fb0175f7735299831ee1b22b812"
		newReadme = "7cb18dc9bafbfcf74629a4b760af1b160957a83e"
	)
	files := map[string]string{
		"blobs/" + weights:   "weights",
		"blobs/" + oldReadme: "old readme",
		"blobs/" + newReadme: "new readme",
		"refs/main":          newCommit + "\n",
		".no_exist/" + newCommit + "/tokenizer.json": "",
	}
	links := map[string]string{
		"snapshots/" + oldCommit + "/README.md":         "../../blobs/" + oldReadme,
		"snapshots/" + oldCommit + "/pytorch_model.bin": "../../blobs/" + weights,
		"snapshots/" + newCommit + "/README.md":         "../../blobs/" + newReadme,
		"snapshots/" + newCommit + "/pytorch_model.bin": "../../blobs/" + weights,
	}
	for p, content := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(storage, p)), 0o755)
		os.WriteFile(filepath.Join(storage, p), []byte(content), 0o644)
	}
	for p, target := range links {
		os.MkdirAll(filepath.Dir(filepath.Join(storage, p)), 0o755)
		if err := os.Symlink(target, filepath.Join(storage, p)); err != nil {
			t.Fatal(err)
		}
	}

	h := &Hub{CacheDir: cache, Offline: true, Client: &http.Client{Transport: failTransport{t}}}
	ctx := context.Background()
	for _, tc := range []struct{ revision, file, content string }{
		{"main", "README.md", "new readme"},
		{"main", "pytorch_model.bin", "weights"},
		{oldCommit, "README.md", "old readme"},
	} {
		path, _, err := h.Download(ctx, "julien-c/EsperBERTo-small", tc.revision, tc.file)
		if err != nil {
			t.Fatalf("%s@%s: %v", tc.file, tc.revision, err)
		}
		if b, _ := os.ReadFile(path); string(b) != tc.content {
			t.Errorf("%s@%s = %q, want %q", tc.file, tc.revision, b, tc.content)
		}
	}
	if _, _, err := h.Download(ctx, "julien-c/EsperBERTo-small", "main", "tokenizer.json"); !errors.Is(err, ErrEntryNotFound) {
		t.Errorf("file recorded in .no_exist: %v, want ErrEntryNotFound", err)
	}
	if _, _, err := h.Download(ctx, "julien-c/EsperBERTo-small", "main", "config.json"); !errors.Is(err, ErrNotCached) || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("uncached file: %v", err)
	}
}

// A blob Python already downloaded is reused online: only the HEAD request is
// made, and a new commit that has the same file gets a pointer to it.
func TestReusesPythonBlobOnline(t *testing.T) {
	f := newFakeHub(t)
	data := fakeBytes(10_000, 13)
	f.addRepo("org/m", commitB, map[string]fakeHubFile{"model.safetensors": {data: data, lfs: true}})
	h := f.newHub("")
	etag := fakeSHA256(data)
	storage := filepath.Join(h.CacheDir, "models--org--m")
	os.MkdirAll(filepath.Join(storage, "blobs"), 0o755)
	os.WriteFile(filepath.Join(storage, "blobs", etag), data, 0o644)
	os.MkdirAll(filepath.Join(storage, "snapshots", commitA), 0o755)
	os.Symlink("../../blobs/"+etag, filepath.Join(storage, "snapshots", commitA, "model.safetensors"))
	os.MkdirAll(filepath.Join(storage, "refs"), 0o755)
	os.WriteFile(filepath.Join(storage, "refs", "main"), []byte(commitA), 0o644)

	path, commit, err := h.Download(context.Background(), "org/m", "main", "model.safetensors")
	if err != nil || commit != commitB {
		t.Fatalf("%s %s %v", path, commit, err)
	}
	checkCacheEntry(t, h, "org/m", "main", commitB, "model.safetensors", data, etag)
	if reqs := f.take(); len(reqs) != 1 || reqs[0].method != "HEAD" {
		t.Errorf("requests %+v, want a single HEAD", reqs)
	}
}

func TestDownloadRefusesUnsafeServerValues(t *testing.T) {
	f := newFakeHub(t)
	f.addRepo("org/m", commitA, map[string]fakeHubFile{"config.json": {data: []byte("{}")}})
	evil := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Repo-Commit", commitA)
		w.Header().Set("ETag", `"../../../escape"`)
		w.Header().Set("Content-Length", "2")
	})
	f.override = evil
	h := f.newHub("")
	_, _, err := h.Download(context.Background(), "org/m", "main", "config.json")
	if !errors.Is(err, ErrHubProtocol) || !strings.Contains(err.Error(), "unusable ETag") {
		t.Errorf("path-like ETag: %v", err)
	}
}

// TestCacheReadByHuggingfaceJS has an independent implementation of the cache
// format, @huggingface/hub's scanCacheDir (a port of huggingface_hub's
// scan_cache_dir), list a cache this package wrote. It needs node and the
// npm package; see testdata/hubcache/scan_cache.mjs for the setup.
func TestCacheReadByHuggingfaceJS(t *testing.T) {
	hfjs := os.Getenv("FACTLENS_HFJS")
	node, err := exec.LookPath("node")
	if hfjs == "" || err != nil {
		t.Skip("set FACTLENS_HFJS to a folder with node_modules/@huggingface/hub (and have node) to run")
	}
	f := newFakeHub(t)
	weights := fakeBytes(4096, 14)
	configA, configB := []byte(`{"n_layer": 1}`), []byte(`{"n_layer": 2}`)
	f.addRepo("org/m", commitA, map[string]fakeHubFile{"config.json": {data: configA}, "model.safetensors": {data: weights, lfs: true}})
	f.addRepo("org/m", commitB, map[string]fakeHubFile{"config.json": {data: configB}, "model.safetensors": {data: weights, lfs: true}}, "v2")
	f.repos["org/m"].branches["main"] = commitA
	h := f.newHub("")
	for _, rev := range []string{"main", "v2"} {
		for _, file := range []string{"config.json", "model.safetensors"} {
			if _, _, err := h.Download(context.Background(), "org/m", rev, file); err != nil {
				t.Fatal(err)
			}
		}
	}

	cmd := exec.Command(node, filepath.Join("testdata", "hubcache", "scan_cache.mjs"), h.CacheDir)
	cmd.Env = append(os.Environ(), "FACTLENS_HFJS="+hfjs)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	type file struct {
		Name, Blob string
		Size       int
	}
	type revision struct {
		Commit string
		Refs   []string
		Files  []file
	}
	var got struct {
		Repos []struct {
			ID, Type  string
			Revisions []revision
		}
		Warnings []string
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	model := file{"model.safetensors", fakeSHA256(weights), len(weights)}
	want := []revision{
		{commitA, []string{"main"}, []file{{"config.json", fakeGitBlobSHA1(configA), len(configA)}, model}},
		{commitB, []string{"v2"}, []file{{"config.json", fakeGitBlobSHA1(configB), len(configB)}, model}},
	}
	if len(got.Warnings) != 0 || len(got.Repos) != 1 || got.Repos[0].ID != "org/m" || got.Repos[0].Type != "model" ||
		fmt.Sprint(got.Repos[0].Revisions) != fmt.Sprint(want) {
		t.Errorf("scanCacheDir sees %s\nwant repo org/m with %v", out, want)
	}
}

// BenchmarkDownload measures a 32 MiB LFS download from the loopback fake
// CDN into a fresh cache, sha256 check, fsync and rename included.
func BenchmarkDownload(b *testing.B) {
	data := fakeBytes(32<<20, 15)
	f := newFakeHub(b)
	f.addRepo("org/m", commitA, map[string]fakeHubFile{"model.safetensors": {data: data, lfs: true}})
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		h := f.newHub("")
		if _, _, err := h.Download(context.Background(), "org/m", "main", "model.safetensors"); err != nil {
			b.Fatal(err)
		}
	}
}

// If the Hub answers the HEAD itself but redirects the GET to another host,
// the token must be dropped on the way, as the HEAD's own CDN redirect does.
func TestDownloadTokenStaysOnHubHost(t *testing.T) {
	f := newFakeHub(t)
	data := fakeBytes(3000, 16)
	f.addRepo("org/lfs", commitA, map[string]fakeHubFile{"x.safetensors": {data: data, lfs: true}})
	f.override = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Repo-Commit", commitA)
		w.Header().Set("X-Linked-Etag", `"`+fakeSHA256(data)+`"`)
		w.Header().Set("X-Linked-Size", fmt.Sprint(len(data)))
		if r.Method == http.MethodHead {
			return
		}
		http.Redirect(w, r, fakeCDN+"/repos/"+fakeSHA256(data)+"?X-Amz-Signature=s", http.StatusFound)
	})
	h := f.newHub("hf_secret")
	if _, _, err := h.Download(context.Background(), "org/m", "main", "x.safetensors"); err != nil {
		t.Fatal(err)
	}
	checkCacheEntry(t, h, "org/m", "main", commitA, "x.safetensors", data, fakeSHA256(data))
	for _, r := range f.take() {
		if want := map[string]string{"hub": "Bearer hf_secret", "cdn": ""}[r.host]; r.auth != want {
			t.Errorf("%s %s on %s with Authorization %q, want %q", r.method, r.path, r.host, r.auth, want)
		}
	}
}
