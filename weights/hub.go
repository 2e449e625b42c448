package weights

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultHubEndpoint is the Hugging Face Hub that HF_ENDPOINT overrides.
const DefaultHubEndpoint = "https://huggingface.co"

// defaultRevision is the branch huggingface_hub uses when none is given.
const defaultRevision = "main"

// Timeouts and retry counts follow huggingface_hub's defaults
// (HF_HUB_ETAG_TIMEOUT=10 s for the metadata request, 5 resumes of a
// stalled or cut transfer); the stall limit is longer than Python's 10 s read
// timeout because a slow CDN edge is better waited for than restarted.
const (
	hubMetadataTimeout = 10 * time.Second
	hubStallTimeout    = 30 * time.Second
	hubRetryWait       = time.Second
	hubMaxRetries      = 5
)

// Hub downloads files from the Hugging Face Hub into a cache laid out exactly
// as Python's huggingface_hub lays it out, so that a cache filled by Python is
// reused and files fetched here are found by Python:
//
//	<CacheDir>/models--<org>--<name>/
//	    blobs/<etag>                       file contents, named by ETag (sha256 for LFS files)
//	    snapshots/<commit>/<file>          relative symlink to ../../blobs/<etag>
//	    refs/<revision>                    commit sha the branch or tag pointed to
//	    .no_exist/<commit>/<file>          empty marker: file absent at that commit
//	<CacheDir>/.locks/models--<org>--<name>/<etag>.lock
//
// Dataset repositories (DownloadDataset) are laid out the same way under
// datasets--<org>--<name>.
//
// The zero value is usable: it talks to DefaultHubEndpoint without a token and
// caches under ~/.cache/huggingface/hub. A Hub may be used by several
// goroutines at once; downloads of the same blob are serialised by a file
// lock that Python's huggingface_hub also takes.
type Hub struct {
	Endpoint string // "https://huggingface.co" when empty; no trailing slash needed
	Token    string // sent as "Authorization: Bearer <Token>" to the endpoint's host only
	CacheDir string // hub cache folder (…/huggingface/hub)
	Offline  bool   // never touch the network; serve only what the cache holds
	Client   *http.Client

	// Progress, when set, is called once for each file that is actually
	// transferred (never for cache hits), just before its first byte arrives.
	// file is "<repo>/<filename>", size the number of bytes this transfer
	// will write (the whole file, or what remains of an interrupted
	// download), or -1 when the server does not say. Every received byte is
	// written to the returned writer, which is closed when the transfer ends,
	// successfully or not. Its write errors are ignored. A nil Progress keeps
	// the package silent: this package never prints.
	Progress func(file string, size int64) io.WriteCloser

	// tokenFrom names where Token came from ("HF_TOKEN", a token file…), for
	// error messages that tell the user which setting to fix.
	tokenFrom string

	// Zero means the defaults above; tests shorten them.
	metadataTimeout time.Duration
	stallTimeout    time.Duration
	retryWait       time.Duration
	maxRetries      int // -1: no retry at all
}

// HubFromEnv builds a Hub from the environment variables huggingface_hub
// reads, through getenv (normally os.Getenv):
//
//	HF_ENDPOINT                     Hub URL (default https://huggingface.co)
//	HF_TOKEN, HUGGING_FACE_HUB_TOKEN access token, first non-empty wins; else
//	HF_TOKEN_PATH                   token file (default $HF_HOME/token, written by `hf auth login`)
//	HF_HOME                         default $XDG_CACHE_HOME/huggingface or ~/.cache/huggingface
//	HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE cache folder (default $HF_HOME/hub)
//	HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE  1/ON/YES/TRUE (any case) turn on offline mode
//
// Reading the token file is the only I/O it does; a missing file means no token.
func HubFromEnv(getenv func(string) string) *Hub {
	h := &Hub{Endpoint: strings.TrimRight(getenv("HF_ENDPOINT"), "/")}
	if h.Endpoint == "" {
		h.Endpoint = DefaultHubEndpoint
	}

	home := hubExpandHome(getenv("HF_HOME"), getenv)
	if home == "" {
		base := hubExpandHome(getenv("XDG_CACHE_HOME"), getenv)
		if base == "" {
			base = filepath.Join(hubHomeDir(getenv), ".cache")
		}
		home = filepath.Join(base, "huggingface")
	}

	h.CacheDir = hubExpandHome(getenv("HF_HUB_CACHE"), getenv)
	if h.CacheDir == "" {
		h.CacheDir = hubExpandHome(getenv("HUGGINGFACE_HUB_CACHE"), getenv)
	}
	if h.CacheDir == "" {
		h.CacheDir = filepath.Join(home, "hub")
	}

	for _, name := range []string{"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"} {
		if tok := hubCleanToken(getenv(name)); tok != "" {
			h.Token, h.tokenFrom = tok, name
			break
		}
	}
	if h.Token == "" {
		path := hubExpandHome(getenv("HF_TOKEN_PATH"), getenv)
		if path == "" {
			path = filepath.Join(home, "token")
		}
		if b, err := os.ReadFile(path); err == nil {
			if tok := hubCleanToken(string(b)); tok != "" {
				h.Token, h.tokenFrom = tok, "token file "+path
			}
		}
	}

	h.Offline = hubEnvTrue(getenv("HF_HUB_OFFLINE")) || hubEnvTrue(getenv("TRANSFORMERS_OFFLINE"))
	return h
}

// hubEnvTrue follows huggingface_hub's _is_true.
func hubEnvTrue(v string) bool {
	switch strings.ToUpper(v) {
	case "1", "ON", "YES", "TRUE":
		return true
	}
	return false
}

// hubCleanToken follows huggingface_hub's _clean_token: newlines removed,
// surrounding spaces trimmed.
func hubCleanToken(s string) string {
	s = strings.ReplaceAll(s, "\r", "")
	s = strings.ReplaceAll(s, "\n", "")
	return strings.TrimSpace(s)
}

func hubHomeDir(getenv func(string) string) string {
	if home := getenv("HOME"); home != "" {
		return home
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "."
	}
	return home
}

// hubExpandHome expands a leading "~" as Python's os.path.expanduser does.
func hubExpandHome(path string, getenv func(string) string) string {
	if path == "~" {
		return hubHomeDir(getenv)
	}
	if strings.HasPrefix(path, "~/") {
		return filepath.Join(hubHomeDir(getenv), path[2:])
	}
	return path
}

func (h *Hub) endpoint() string {
	if h.Endpoint == "" {
		return DefaultHubEndpoint
	}
	return strings.TrimRight(h.Endpoint, "/")
}

func (h *Hub) cacheDir() string {
	if h.CacheDir != "" {
		return h.CacheDir
	}
	return HubFromEnv(func(string) string { return "" }).CacheDir
}

func (h *Hub) client() *http.Client {
	if h.Client != nil {
		return h.Client
	}
	return http.DefaultClient
}

func (h *Hub) durations() (metadata, stall, wait time.Duration, retries int) {
	metadata, stall, wait, retries = hubMetadataTimeout, hubStallTimeout, hubRetryWait, hubMaxRetries
	if h.metadataTimeout > 0 {
		metadata = h.metadataTimeout
	}
	if h.stallTimeout > 0 {
		stall = h.stallTimeout
	}
	if h.retryWait > 0 {
		wait = h.retryWait
	}
	if h.maxRetries > 0 {
		retries = h.maxRetries
	} else if h.maxRetries < 0 {
		retries = 0
	}
	return
}

// tokenSetting describes the token in use, for error messages.
func (h *Hub) tokenSetting() string {
	switch {
	case h.Token == "":
		return "no token is set (set HF_TOKEN, or log in with `hf auth login`)"
	case h.tokenFrom != "":
		return "the token from " + h.tokenFrom
	default:
		return "the configured token"
	}
}

// Errors a Hub returns wrap one of these, so callers can tell them apart
// with errors.Is.
var (
	ErrRepoNotFound     = errors.New("repository not found")
	ErrRevisionNotFound = errors.New("revision not found")
	ErrEntryNotFound    = errors.New("file not found in repository")
	ErrGatedRepo        = errors.New("gated repository")
	ErrUnauthorized     = errors.New("not authorized")
	ErrNotCached        = errors.New("not in the local cache")
	ErrCacheWrite       = errors.New("cannot write the cache")
	ErrHubUnreachable   = errors.New("hub unreachable")
	ErrBadDownload      = errors.New("download does not match the Hub's checksum or size")
	ErrHubProtocol      = errors.New("unexpected Hub response")
)

// HubError is the error a Hub returns for one file. Kind is one of the
// Err… values above; Err, when set, is the underlying cause (a network
// error, context.Canceled…). Both are visible to errors.Is.
type HubError struct {
	Kind     error
	Repo     string
	Revision string
	File     string
	Status   int    // HTTP status, 0 when no response was received
	Server   string // X-Error-Message sent by the Hub, if any
	Detail   string // what happened, in words
	Hint     string // what the user can do about it
	Err      error
}

func (e *HubError) Error() string {
	var b strings.Builder
	b.WriteString("weights: ")
	b.WriteString(e.Repo)
	if e.File != "" {
		b.WriteString(": ")
		b.WriteString(e.File)
	}
	if e.Revision != "" {
		fmt.Fprintf(&b, " (revision %s)", e.Revision)
	}
	b.WriteString(": ")
	b.WriteString(e.Detail)
	if e.Status != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.Status)
	}
	if e.Server != "" && !strings.Contains(strings.ToLower(e.Detail), strings.ToLower(e.Server)) {
		fmt.Fprintf(&b, "; Hub says: %q", e.Server)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.Hint != "" {
		b.WriteString("; ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

func (e *HubError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

const hubOfflineHint = "to work without the network set HF_HUB_OFFLINE=1 (uses only the cache) or pass a local model folder with --model"

// newStatusError turns an HTTP error response into a HubError, following
// huggingface_hub's hf_raise_for_status: X-Error-Code decides the kind, and
// 401 without a code means the repository is missing, private or gated.
func (h *Hub) newStatusError(resp *http.Response, repo, revision, file string) *HubError {
	e := &HubError{
		Repo: repo, Revision: revision, File: file,
		Status: resp.StatusCode,
		Server: strings.TrimSpace(resp.Header.Get("X-Error-Message")),
	}
	page := h.endpoint() + "/" + repo
	switch code := resp.Header.Get("X-Error-Code"); {
	case code == "RevisionNotFound":
		e.Kind, e.Detail = ErrRevisionNotFound, fmt.Sprintf("revision %q does not exist in the repository", revision)
		e.Hint = "check the branch, tag or commit name given as the revision"
	case code == "EntryNotFound":
		e.Kind, e.Detail = ErrEntryNotFound, "no such file in the repository at this revision"
	case code == "GatedRepo":
		e.Kind = ErrGatedRepo
		if h.Token == "" {
			e.Detail = "gated repository and no token was sent"
			e.Hint = "accept its conditions at " + page + " and set HF_TOKEN to a token of that account"
		} else {
			e.Detail = "gated repository: the account behind " + h.tokenSetting() + " has not been granted access"
			e.Hint = "request access at " + page + " (or use a token of an account that has it)"
		}
	case code == "RepoNotFound":
		e.Kind, e.Detail = ErrRepoNotFound, "repository does not exist, or is private"
		what := "model id"
		if strings.HasPrefix(repo, "datasets/") {
			what = "dataset id"
		}
		if h.Token == "" {
			e.Hint = "check the " + what + "; if the repository is private " + h.tokenSetting()
		} else {
			e.Hint = "check the " + what + "; if the repository is private, check that " + h.tokenSetting() + " has access to it"
		}
	case resp.StatusCode == http.StatusUnauthorized:
		e.Kind = ErrUnauthorized
		if h.Token == "" {
			e.Detail = "authentication required: the repository is missing, private or gated"
			e.Hint = h.tokenSetting()
		} else {
			e.Detail = "authentication failed: " + h.tokenSetting() + " was rejected (invalid or expired?)"
			e.Hint = "create a new token at " + h.endpoint() + "/settings/tokens"
		}
	case resp.StatusCode == http.StatusForbidden:
		e.Kind = ErrUnauthorized
		if h.Token == "" {
			e.Detail = "access denied"
			e.Hint = h.tokenSetting()
		} else {
			e.Detail = "access denied: " + h.tokenSetting() + " lacks the needed permission"
			e.Hint = "fine-grained tokens need read access to this repository (or to public gated repositories)"
		}
	case resp.StatusCode == http.StatusNotFound:
		// No X-Error-Code (a mirror or proxy): the repository, the revision
		// or the file may be the missing one.
		e.Kind, e.Detail = ErrEntryNotFound, "not found: the repository, the revision or the file does not exist"
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		e.Kind, e.Detail = ErrHubUnreachable, "the Hub is overloaded or down"
		e.Hint = "retry later; " + hubOfflineHint
	default:
		e.Kind, e.Detail = ErrHubProtocol, "unexpected HTTP status "+resp.Status
	}
	return e
}

// hubContextError reports a cancelled or timed-out operation without hints:
// the caller asked for it to stop.
func hubContextError(ctx context.Context, repo, revision, file string) *HubError {
	e := &HubError{Kind: ctx.Err(), Repo: repo, Revision: revision, File: file, Detail: "interrupted"}
	if cause := context.Cause(ctx); cause != e.Kind {
		e.Err = cause
	}
	return e
}
