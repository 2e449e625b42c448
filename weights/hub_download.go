package weights

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// hubFileMeta is what the metadata request (HEAD on the resolve URL) tells
// about one file, as huggingface_hub's get_hf_file_metadata reads it.
type hubFileMeta struct {
	url      string // the resolve URL
	location string // where the content is fetched: the resolve URL or a CDN
	commit   string // X-Repo-Commit
	etag     string // X-Linked-Etag or ETag, normalised; names the blob
	size     int64  // X-Linked-Size or Content-Length; -1 when absent
}

// Download returns the local path of filename in the model repository repo
// at revision (a branch, tag or commit sha; "" means "main"), and the commit
// it belongs to. The file is fetched into the cache only when the cache does
// not already hold it; a revision that is a full commit sha already cached
// costs no network request at all.
//
// Online, one HEAD request on {Endpoint}/{repo}/resolve/{revision}/{filename}
// gives the commit, the ETag and the size; relative redirects (renamed
// repositories) are followed, an absolute one names the CDN to download from,
// to which the token is never sent. The body goes to blobs/<etag>.incomplete,
// resumed with a Range request when that file exists, is checked against the
// size and, for LFS files whose ETag is a sha256, against the hash, and only
// then renamed into blobs/ and linked from snapshots/. If the Hub cannot be
// reached (or refuses, as for a gated repository) and the cache has the file
// for that revision, the cached file is returned, as huggingface_hub does.
//
// Errors are *HubError values; see the Err… kinds.
func (h *Hub) Download(ctx context.Context, repo, revision, filename string) (localPath, commit string, err error) {
	return h.download(ctx, hubRepo{typ: hubModel, id: repo}, revision, filename)
}

// DownloadDataset is Download for a dataset repository: the file is fetched
// from {Endpoint}/datasets/{repo}/resolve/{revision}/{filename} and cached
// under datasets--<org>--<name>, where huggingface_hub puts it for
// hf_hub_download(..., repo_type="dataset"). Errors name the repository as
// "datasets/<repo>".
func (h *Hub) DownloadDataset(ctx context.Context, repo, revision, filename string) (localPath, commit string, err error) {
	return h.download(ctx, hubRepo{typ: hubDataset, id: repo}, revision, filename)
}

func (h *Hub) download(ctx context.Context, r hubRepo, revision, filename string) (localPath, commit string, err error) {
	if revision == "" {
		revision = defaultRevision
	}
	if !ValidRepoID(r.id) {
		return "", "", fmt.Errorf("weights: %q is not a valid Hub %s id (want \"name\" or \"org/name\")", r.id, r.typ)
	}
	if err := hubCheckRelPath("file name", filename); err != nil {
		return "", "", err
	}
	if err := hubCheckRelPath("revision", revision); err != nil {
		return "", "", err
	}
	storage := h.storageDir(r)
	repo := r.path() // how errors and URLs name it

	// A commit never changes, so what the cache knows about it is final.
	if hubIsCommit(revision) {
		path, _, herr := h.lookupCache(r, revision, filename)
		if herr == nil || errors.Is(herr, ErrEntryNotFound) {
			return hubPathOrEmpty(path, herr), revision, hubErrOrNil(herr)
		}
	}

	if h.Offline {
		path, commit, herr := h.lookupCache(r, revision, filename)
		if herr != nil {
			if herr.Kind == ErrNotCached {
				herr.Detail = "offline mode is on (HF_HUB_OFFLINE) and " + herr.Detail
				herr.Hint = "download it once with the network on, or pass a local model folder with --model"
			}
			return "", "", herr
		}
		return path, commit, nil
	}

	meta, herr := h.fileMetadata(ctx, repo, revision, filename)
	if herr != nil {
		if ctx.Err() != nil {
			return "", "", hubContextError(ctx, repo, revision, filename)
		}
		switch herr.Kind {
		case ErrEntryNotFound:
			if hubCheckComponent("commit", meta.commit) == nil {
				hubMarkNoExist(storage, meta.commit, filename)
				hubWriteRef(storage, revision, meta.commit) // a cache of a fact: failure is harmless
			}
			return "", "", herr
		case ErrRevisionNotFound:
			return "", "", herr
		}
		if path, commit, cerr := h.lookupCache(r, revision, filename); cerr == nil {
			return path, commit, nil
		}
		return "", "", herr
	}

	blob := filepath.Join(storage, "blobs", meta.etag)
	pointer := hubPointerPath(storage, meta.commit, filename)
	fsErr := func(err error) (string, string, error) {
		return "", "", &HubError{Kind: ErrCacheWrite, Repo: repo, Revision: revision, File: filename,
			Detail: "cannot write the cache " + h.cacheDir(), Err: err}
	}

	if !hubFileOK(pointer, meta.size) {
		unlock, err := hubLock(ctx, h.lockPath(r, meta.etag))
		if err != nil {
			if ctx.Err() != nil {
				return "", "", hubContextError(ctx, repo, revision, filename)
			}
			return fsErr(err)
		}
		defer unlock()
		// Another goroutine or process may have fetched it while we waited.
		if !hubFileOK(blob, meta.size) {
			if err := h.fetchBlob(ctx, repo, revision, filename, meta, blob); err != nil {
				return "", "", err
			}
		}
		if err := hubLinkPointer(pointer, blob); err != nil {
			return fsErr(err)
		}
	}
	if err := hubWriteRef(storage, revision, meta.commit); err != nil {
		return fsErr(err)
	}
	return pointer, meta.commit, nil
}

func hubPathOrEmpty(path string, herr *HubError) string {
	if herr != nil {
		return ""
	}
	return path
}

// hubErrOrNil keeps a nil *HubError from becoming a non-nil error interface.
func hubErrOrNil(herr *HubError) error {
	if herr == nil {
		return nil
	}
	return herr
}

// hubFileOK reports whether path (followed through symlinks) is a regular
// file of the expected size; a short or long blob is a broken download that
// must be fetched again, as huggingface_hub ≥ 1.0 does.
func hubFileOK(path string, size int64) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && (size < 0 || fi.Size() == size)
}

// fileURL is huggingface_hub's hf_hub_url: the revision is escaped whole
// (refs/pr/1 → refs%2Fpr%2F1), the file name keeps its slashes. repoPath is
// hubRepo.path(): the id, after "datasets/" for a dataset.
func (h *Hub) fileURL(repoPath, revision, filename string) string {
	return h.endpoint() + "/" + repoPath + "/resolve/" + hubQuote(revision, "") + "/" + hubQuote(filename, "/")
}

// hubQuote is Python's urllib.parse.quote: every byte but ASCII letters,
// digits, "_.-~" and the safe ones becomes %XX.
func hubQuote(s, safe string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if hubIsWordByte(c) || c == '.' || c == '-' || c == '~' || strings.IndexByte(safe, c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

// hubNormalizeEtag strips the weak marker and the quotes of an ETag header value.
func hubNormalizeEtag(v string) string {
	v = strings.TrimSpace(v)
	v = strings.TrimPrefix(v, "W/")
	return strings.Trim(v, `"`)
}

func hubSameHost(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	return err1 == nil && err2 == nil && strings.EqualFold(ua.Host, ub.Host) && ua.Scheme == ub.Scheme
}

func (h *Hub) setHeaders(req *http.Request, withToken bool) {
	req.Header.Set("User-Agent", "factlens (Go; huggingface_hub-compatible cache)")
	// Identity encoding keeps Content-Length the size of the file and lets
	// Range offsets mean bytes of the file.
	req.Header.Set("Accept-Encoding", "identity")
	if withToken && h.Token != "" {
		req.Header.Set("Authorization", "Bearer "+h.Token)
	}
}

// fileMetadata asks the Hub about one file with a HEAD request, following
// only relative redirects, as huggingface_hub does: an absolute redirect
// points to the CDN, whose answer carries none of the Hub's headers.
func (h *Hub) fileMetadata(ctx context.Context, repo, revision, filename string) (hubFileMeta, *HubError) {
	timeout, _, _, _ := h.durations()
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	m := hubFileMeta{url: h.fileURL(repo, revision, filename), size: -1}
	protoErr := func(detail string) (hubFileMeta, *HubError) {
		return m, &HubError{Kind: ErrHubProtocol, Repo: repo, Revision: revision, File: filename, Detail: detail,
			Hint: "is HF_ENDPOINT (" + h.endpoint() + ") a Hugging Face Hub? A proxy or firewall may be answering instead"}
	}
	client := *h.client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	cur := m.url
	for hops := 0; ; hops++ {
		if hops > 10 {
			return protoErr("more than 10 redirects")
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodHead, cur, nil)
		if err != nil {
			return protoErr("bad URL " + cur + ": " + err.Error())
		}
		h.setHeaders(req, hubSameHost(cur, m.url))
		resp, err := client.Do(req)
		if err != nil {
			if parent.Err() == nil && ctx.Err() != nil {
				err = fmt.Errorf("no answer within %v", timeout)
			}
			return m, &HubError{Kind: ErrHubUnreachable, Repo: repo, Revision: revision, File: filename,
				Detail: "cannot reach " + h.endpoint() + " and the file is not in the cache", Err: err, Hint: hubOfflineHint}
		}
		resp.Body.Close()

		switch {
		case resp.StatusCode >= 400:
			m.commit = resp.Header.Get("X-Repo-Commit")
			return m, h.newStatusError(resp, repo, revision, filename)
		case resp.StatusCode >= 300:
			loc := resp.Header.Get("Location")
			target, err := url.Parse(loc)
			if loc == "" || err != nil {
				return protoErr(fmt.Sprintf("redirect (HTTP %d) with bad Location %q", resp.StatusCode, loc))
			}
			if target.Scheme == "" && target.Host == "" {
				base, _ := url.Parse(cur)
				cur = base.ResolveReference(target).String()
				continue
			}
			m.location = target.String()
		default:
			m.location = cur
		}

		m.commit = resp.Header.Get("X-Repo-Commit")
		m.etag = hubNormalizeEtag(resp.Header.Get("X-Linked-Etag"))
		if m.etag == "" {
			m.etag = hubNormalizeEtag(resp.Header.Get("ETag"))
		}
		sizeHeader := resp.Header.Get("X-Linked-Size")
		if sizeHeader == "" {
			sizeHeader = resp.Header.Get("Content-Length")
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(sizeHeader), 10, 64); err == nil && n >= 0 {
			m.size = n
		}
		switch {
		case m.commit == "":
			return protoErr("the answer has no X-Repo-Commit header")
		case m.etag == "":
			return protoErr("the answer has no ETag, so the file cannot be cached reliably")
		case hubCheckComponent("commit", m.commit) != nil:
			return protoErr(fmt.Sprintf("unusable X-Repo-Commit %q", m.commit))
		case hubCheckComponent("etag", m.etag) != nil:
			return protoErr(fmt.Sprintf("unusable ETag %q", m.etag))
		}
		return m, nil
	}
}

var errHubStalled = errors.New("no data received for too long")

// fetchBlob downloads m into blob via blob.incomplete, resuming what an
// earlier attempt left there, and renames it into place once its size and
// (for a sha256 ETag) its hash are right. The caller holds the blob's lock.
func (h *Hub) fetchBlob(ctx context.Context, repo, revision, filename string, m hubFileMeta, blob string) error {
	_, _, wait, retries := h.durations()
	newErr := func(kind error, detail string, err error) *HubError {
		return &HubError{Kind: kind, Repo: repo, Revision: revision, File: filename, Detail: detail, Err: err}
	}
	incomplete := blob + ".incomplete"
	if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
		return newErr(ErrCacheWrite, "cannot write the cache", err)
	}
	f, err := os.OpenFile(incomplete, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return newErr(ErrCacheWrite, "cannot write the cache", err)
	}
	defer f.Close() // after a successful rename this is a harmless second close

	have, err := f.Seek(0, io.SeekEnd)
	if err == nil && m.size >= 0 && have > m.size {
		have, err = 0, f.Truncate(0)
	}
	var sum hash.Hash
	if err == nil && hubIsSHA256(m.etag) {
		sum = sha256.New()
		if have > 0 {
			// The resumed prefix must be hashed too.
			if _, err = f.Seek(0, io.SeekStart); err == nil {
				if _, err = io.CopyN(sum, f, have); err == nil {
					_, err = f.Seek(have, io.SeekStart)
				}
			}
		}
	}
	if err != nil {
		return newErr(ErrCacheWrite, "cannot read the partial download "+incomplete, err)
	}

	t := &hubTransfer{hub: h, meta: m, file: f, have: have, sum: sum, label: repo + "/" + filename}
	defer t.closeProgress()
	failures := 0
	for m.size < 0 || t.have < m.size {
		received, retry, err := t.attempt(ctx)
		if err == nil {
			if m.size < 0 {
				break // the server said nothing about the size: its EOF ends the file
			}
			continue
		}
		if ctx.Err() != nil {
			return hubContextError(ctx, repo, revision, filename)
		}
		var herr *HubError
		if !errors.As(err, &herr) {
			herr = newErr(ErrHubUnreachable, "download interrupted", err)
		}
		herr.Repo, herr.Revision, herr.File = repo, revision, filename
		if !retry {
			return herr
		}
		if received > 0 {
			failures = 0
		} else {
			failures++
		}
		if retries == 0 || failures > retries {
			herr.Hint = fmt.Sprintf("%d of %s bytes are kept in %s; run again to resume", t.have, hubSizeText(m.size), incomplete)
			return herr
		}
		select {
		case <-ctx.Done():
			return hubContextError(ctx, repo, revision, filename)
		case <-time.After(wait):
		}
	}

	if sum != nil {
		if got := hex.EncodeToString(sum.Sum(nil)); got != m.etag {
			f.Close()
			os.Remove(incomplete) // resuming a corrupt file would only corrupt again
			return &HubError{Kind: ErrBadDownload, Repo: repo, Revision: revision, File: filename,
				Detail: fmt.Sprintf("downloaded data has sha256 %s but the Hub's ETag is %s; the partial file was deleted", got, m.etag),
				Hint:   "run again; if it persists, the endpoint or a proxy serves wrong data"}
		}
	}
	if err := f.Sync(); err != nil {
		return newErr(ErrCacheWrite, "cannot write the cache", err)
	}
	if err := f.Close(); err != nil {
		return newErr(ErrCacheWrite, "cannot write the cache", err)
	}
	if err := os.Rename(incomplete, blob); err != nil {
		return newErr(ErrCacheWrite, "cannot write the cache", err)
	}
	return nil
}

func hubSizeText(n int64) string {
	if n < 0 {
		return "?"
	}
	return strconv.FormatInt(n, 10)
}

// hubTransfer is one file's download across its attempts.
type hubTransfer struct {
	hub      *Hub
	meta     hubFileMeta
	file     *os.File // positioned at have
	have     int64    // bytes in file
	sum      hash.Hash
	label    string
	progress io.WriteCloser
	started  bool
}

func (t *hubTransfer) closeProgress() {
	if t.progress != nil {
		t.progress.Close()
	}
}

func (t *hubTransfer) restart() error {
	err := t.file.Truncate(0)
	if err == nil {
		_, err = t.file.Seek(0, io.SeekStart)
	}
	if err != nil {
		return &HubError{Kind: ErrCacheWrite, Detail: "cannot write the cache", Err: err}
	}
	t.have = 0
	if t.sum != nil {
		t.sum.Reset()
	}
	return nil
}

// attempt makes one GET from t.have on and appends what arrives. It reports
// how many bytes it received and whether a failure is worth retrying.
func (t *hubTransfer) attempt(ctx context.Context) (received int64, retry bool, err error) {
	h := t.hub
	_, stall, _, _ := h.durations()
	reqCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchdog := time.AfterFunc(stall, func() { cancel(errHubStalled) })
	defer watchdog.Stop()
	netErr := func(err error) error {
		if context.Cause(reqCtx) == errHubStalled {
			err = fmt.Errorf("%w (%v)", errHubStalled, stall)
		}
		return &HubError{Kind: ErrHubUnreachable, Detail: "download interrupted", Err: err, Hint: hubOfflineHint}
	}

	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, t.meta.location, nil)
	if err != nil {
		return 0, false, &HubError{Kind: ErrHubProtocol, Detail: "bad download URL", Err: err}
	}
	// The token goes to the Hub's own host only, never to a CDN.
	h.setHeaders(req, hubSameHost(t.meta.location, t.meta.url))
	if t.have > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", t.have))
	}
	client := *h.client()
	client.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("more than 10 redirects")
		}
		if !strings.EqualFold(req.URL.Host, via[0].URL.Host) {
			req.Header.Del("Authorization")
		}
		return nil
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, true, netErr(err)
	}
	defer resp.Body.Close()

	switch resp.StatusCode {
	case http.StatusOK:
		if t.have > 0 { // the server ignored Range: start over
			if err := t.restart(); err != nil {
				return 0, false, err
			}
		}
	case http.StatusPartialContent:
		if start, ok := hubContentRangeStart(resp.Header.Get("Content-Range")); !ok || start != t.have {
			if err := t.restart(); err != nil {
				return 0, false, err
			}
			return 0, true, &HubError{Kind: ErrHubProtocol, Status: resp.StatusCode,
				Detail: fmt.Sprintf("asked for bytes from %d, got Content-Range %q", t.have, resp.Header.Get("Content-Range"))}
		}
	case http.StatusRequestedRangeNotSatisfiable:
		// The partial file is longer than the file served: it cannot be a
		// prefix of it.
		if err := t.restart(); err != nil {
			return 0, false, err
		}
		return 0, true, &HubError{Kind: ErrHubProtocol, Status: resp.StatusCode, Detail: "partial download does not fit the file; starting over"}
	default:
		herr := h.newStatusError(resp, "", "", "")
		return 0, herr.Kind == ErrHubUnreachable, herr
	}

	if !t.started {
		t.started = true
		if h.Progress != nil {
			size := int64(-1)
			if t.meta.size >= 0 {
				size = t.meta.size - t.have
			}
			t.progress = h.Progress(t.label, size)
		}
	}

	buf := make([]byte, 1<<20)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			watchdog.Reset(stall)
			if t.meta.size >= 0 && t.have+int64(n) > t.meta.size {
				t.restart()
				return received, false, &HubError{Kind: ErrBadDownload,
					Detail: fmt.Sprintf("the server sent more than the %d bytes the Hub announced", t.meta.size)}
			}
			if _, err := t.file.Write(buf[:n]); err != nil {
				return received, false, &HubError{Kind: ErrCacheWrite, Detail: "cannot write the cache", Err: err}
			}
			if t.sum != nil {
				t.sum.Write(buf[:n])
			}
			if t.progress != nil {
				t.progress.Write(buf[:n])
			}
			t.have += int64(n)
			received += int64(n)
		}
		if rerr == io.EOF {
			if t.meta.size >= 0 && t.have < t.meta.size {
				return received, true, netErr(io.ErrUnexpectedEOF)
			}
			return received, false, nil
		}
		if rerr != nil {
			return received, true, netErr(rerr)
		}
	}
}

// hubContentRangeStart parses the first byte position of "bytes S-E/T".
func hubContentRangeStart(v string) (int64, bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !ok {
		return 0, false
	}
	start, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(start), 10, 64)
	return n, err == nil
}
