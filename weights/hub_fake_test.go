package weights

// A fake Hugging Face Hub for tests, serving on loopback only. It answers as
// the Hub's resolve endpoint is documented and observed to answer
// (huggingface_hub's file_download.py and utils/_http.py, Hub responses
// quoted in huggingface_hub, hf-hub and swift-transformers issues):
//
//   - HEAD/GET /{repo}/resolve/{revision}/{path}, revision URL-escaped whole;
//     a dataset repository is served under /datasets/{repo}/resolve/… and is
//     added to the fake as "datasets/{repo}";
//   - every answer about a file carries X-Repo-Commit;
//   - a regular (git) file: 200 with ETag "<git blob sha1>" and its length,
//     or, with resolveCache set, a relative 307 to
//     /api/resolve-cache/models/{repo}/{commit}/{path} that then answers 200;
//   - an LFS file: 302 to an absolute CDN URL, with X-Linked-Etag
//     "<sha256>", X-Linked-Size and an ETag of the pointer file;
//   - errors with X-Error-Code / X-Error-Message: 401 RepoNotFound for a
//     missing or private repository without a token (404 with one),
//     401 GatedRepo without a token, 403 GatedRepo with a token not on the
//     authorized list, 404 RevisionNotFound, 404 EntryNotFound;
//   - the CDN serves bytes by sha256 with Range support (http.ServeContent:
//     206 + Content-Range, 416 when unsatisfiable) and needs no token.
//
// The two servers are reached as http://hub.test and http://cdn.test through
// a transport that dials their loopback listeners, so that they are distinct
// hosts as on the real Hub.

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	fakeEndpoint = "http://hub.test"
	fakeCDN      = "http://cdn.test"
)

type fakeHubFile struct {
	data []byte
	lfs  bool
}

type fakeHubRepo struct {
	branches map[string]string                 // branch or tag → commit
	commits  map[string]map[string]fakeHubFile // commit → path → file
	private  bool                              // only approved sees it
	gated    bool                              // visible, but files need approved
	approved string                            // token with access
}

type fakeHubRequest struct {
	host, method, path, rangeHeader, auth string
}

type fakeHub struct {
	t        testing.TB
	hub, cdn *httptest.Server

	mu           sync.Mutex
	repos        map[string]*fakeHubRepo
	requests     []fakeHubRequest
	resolveCache bool // answer regular files with a relative redirect, as the Hub now does
	// cdnFault, when set, may answer a CDN request itself (return true);
	// attempt counts the CDN GETs for that blob so far, from 1.
	cdnFault func(w http.ResponseWriter, r *http.Request, data []byte, attempt int) bool
	cdnGets  map[string]int
	// override, when set, answers every Hub request instead of the fake.
	override http.Handler
}

func newFakeHub(t testing.TB) *fakeHub {
	t.Helper()
	f := &fakeHub{t: t, repos: map[string]*fakeHubRepo{}, cdnGets: map[string]int{}}
	f.hub = httptest.NewServer(http.HandlerFunc(f.serveHub))
	f.cdn = httptest.NewServer(http.HandlerFunc(f.serveCDN))
	t.Cleanup(func() {
		f.hub.CloseClientConnections()
		f.cdn.CloseClientConnections()
		f.hub.Close()
		f.cdn.Close()
	})
	return f
}

// addRepo adds a repository whose branch main (and any other names given)
// points at one commit holding files.
func (f *fakeHub) addRepo(id, commit string, files map[string]fakeHubFile, branches ...string) *fakeHubRepo {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.repos[id]
	if r == nil {
		r = &fakeHubRepo{branches: map[string]string{}, commits: map[string]map[string]fakeHubFile{}}
		f.repos[id] = r
	}
	r.commits[commit] = files
	for _, b := range append([]string{"main"}, branches...) {
		r.branches[b] = commit
	}
	return r
}

// client reaches hub.test and cdn.test, and nothing else.
func (f *fakeHub) client() *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var target string
			switch addr {
			case "hub.test:80":
				target = f.hub.Listener.Addr().String()
			case "cdn.test:80":
				target = f.cdn.Listener.Addr().String()
			default:
				return nil, fmt.Errorf("test transport: unknown host %s", addr)
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", target)
		},
	}
	f.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// newHub is a Hub on this fake with a fresh cache and short timeouts.
func (f *fakeHub) newHub(token string) *Hub {
	return &Hub{
		Endpoint: fakeEndpoint, Token: token, CacheDir: f.t.TempDir(), Client: f.client(),
		metadataTimeout: 5 * time.Second, stallTimeout: 5 * time.Second, retryWait: 5 * time.Millisecond,
	}
}

func (f *fakeHub) log(r *http.Request, host string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, fakeHubRequest{host: host, method: r.Method, path: r.URL.Path,
		rangeHeader: r.Header.Get("Range"), auth: r.Header.Get("Authorization")})
}

func (f *fakeHub) take() []fakeHubRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	reqs := f.requests
	f.requests = nil
	return reqs
}

func fakeFail(w http.ResponseWriter, status int, code, message string, commit string) {
	if code != "" {
		w.Header().Set("X-Error-Code", code)
	}
	w.Header().Set("X-Error-Message", message)
	if commit != "" {
		w.Header().Set("X-Repo-Commit", commit)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, "{\"error\":%q}", message)
}

func fakeGitBlobSHA1(data []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(data))
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}

func fakeSHA256(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// fakeSegments splits an escaped path and unescapes each part, so that a
// revision sent as refs%2Fpr%2F1 stays one segment.
func fakeSegments(r *http.Request) []string {
	parts := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	for i, p := range parts {
		if u, err := url.PathUnescape(p); err == nil {
			parts[i] = u
		}
	}
	return parts
}

func (f *fakeHub) serveHub(w http.ResponseWriter, r *http.Request) {
	f.log(r, "hub")
	seg := fakeSegments(r)
	var repoID, revision, path string
	cached := false
	switch {
	case len(seg) >= 6 && seg[0] == "datasets" && seg[3] == "resolve":
		repoID, revision, path = "datasets/"+seg[1]+"/"+seg[2], seg[4], strings.Join(seg[5:], "/")
	case len(seg) >= 5 && seg[2] == "resolve":
		repoID, revision, path = seg[0]+"/"+seg[1], seg[3], strings.Join(seg[4:], "/")
	case len(seg) >= 7 && seg[0] == "api" && seg[1] == "resolve-cache" && seg[2] == "models":
		repoID, revision, path, cached = seg[3]+"/"+seg[4], seg[5], strings.Join(seg[6:], "/"), true
	default:
		http.NotFound(w, r)
		return
	}
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")

	f.mu.Lock()
	repo := f.repos[repoID]
	resolveCache := f.resolveCache
	override := f.override
	f.mu.Unlock()
	if override != nil {
		override.ServeHTTP(w, r)
		return
	}

	if repo == nil || (repo.private && token != repo.approved) {
		status := http.StatusNotFound
		if token == "" {
			status = http.StatusUnauthorized
		}
		fakeFail(w, status, "RepoNotFound", "Repository not found", "")
		return
	}
	if repo.gated && token != repo.approved {
		if token == "" {
			fakeFail(w, http.StatusUnauthorized, "GatedRepo",
				"Access to model "+repoID+" is restricted. You must have access to it and be authenticated to access it. Please log in.", "")
		} else {
			fakeFail(w, http.StatusForbidden, "GatedRepo",
				"Access to model "+repoID+" is restricted and you are not in the authorized list. Visit "+fakeEndpoint+"/"+repoID+" to ask for access.", "")
		}
		return
	}
	commit, ok := repo.branches[revision]
	if !ok {
		if _, isCommit := repo.commits[revision]; isCommit {
			commit = revision
		} else {
			fakeFail(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+revision, "")
			return
		}
	}
	file, ok := repo.commits[commit][path]
	if !ok {
		fakeFail(w, http.StatusNotFound, "EntryNotFound", "Entry not found", commit)
		return
	}

	w.Header().Set("X-Repo-Commit", commit)
	if file.lfs {
		sum := fakeSHA256(file.data)
		pointer := fmt.Sprintf("version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n", sum, len(file.data))
		w.Header().Set("ETag", `"`+fakeGitBlobSHA1([]byte(pointer))+`"`)
		w.Header().Set("X-Linked-Etag", `"`+sum+`"`)
		w.Header().Set("X-Linked-Size", fmt.Sprint(len(file.data)))
		w.Header().Set("Location", fakeCDN+"/repos/"+sum+"?X-Amz-Signature=fake&response-content-disposition=inline")
		body := "Found. Redirecting to the CDN"
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(http.StatusFound)
		if r.Method != http.MethodHead {
			fmt.Fprint(w, body)
		}
		return
	}
	etag := `"` + fakeGitBlobSHA1(file.data) + `"`
	if resolveCache && !cached {
		w.Header().Set("Location", fmt.Sprintf("/api/resolve-cache/models/%s/%s/%s?etag=%s", repoID, commit, path, url.QueryEscape(etag)))
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(file.data))
}

func (f *fakeHub) serveCDN(w http.ResponseWriter, r *http.Request) {
	f.log(r, "cdn")
	seg := fakeSegments(r)
	if len(seg) != 2 || seg[0] != "repos" || r.URL.Query().Get("X-Amz-Signature") == "" {
		http.NotFound(w, r)
		return
	}
	var data []byte
	found := false
	f.mu.Lock()
	for _, repo := range f.repos {
		for _, files := range repo.commits {
			for _, file := range files {
				if file.lfs && fakeSHA256(file.data) == seg[1] {
					data, found = file.data, true
				}
			}
		}
	}
	attempt := 0
	if r.Method == http.MethodGet {
		f.cdnGets[seg[1]]++
		attempt = f.cdnGets[seg[1]]
	}
	fault := f.cdnFault
	f.mu.Unlock()
	if !found {
		http.NotFound(w, r)
		return
	}
	if fault != nil && r.Method == http.MethodGet && fault(w, r, data, attempt) {
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}

// fakeCutAfter answers with the full Content-Length, sends n bytes (from the
// requested offset) and drops the connection.
func fakeCutAfter(w http.ResponseWriter, r *http.Request, data []byte, n int) {
	start := 0
	if rg := r.Header.Get("Range"); rg != "" {
		fmt.Sscanf(rg, "bytes=%d-", &start)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(data)-1, len(data)))
		w.Header().Set("Content-Length", fmt.Sprint(len(data)-start))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.WriteHeader(http.StatusOK)
	}
	w.Write(data[start : start+n])
	w.(http.Flusher).Flush()
	panic(http.ErrAbortHandler)
}

// fakeBytes is deterministic filler content.
func fakeBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	x := seed*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}
