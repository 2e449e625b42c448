package weights

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// hubRepo is one Hub repository: its id ("org/name") and its type, which
// huggingface_hub calls repo_type ("model" or "dataset"; spaces are not
// needed here).
type hubRepo struct {
	typ string
	id  string
}

const (
	hubModel   = "model"
	hubDataset = "dataset"
)

// path is the repository as it appears in URLs and in messages:
// huggingface_hub's REPO_TYPES_URL_PREFIXES put "datasets/" before a
// dataset id and nothing before a model id.
func (r hubRepo) path() string {
	if r.typ == hubDataset {
		return "datasets/" + r.id
	}
	return r.id
}

// folder is huggingface_hub's repo_folder_name: the type in the plural, then
// the id, joined by "--" (models--org--name, datasets--org--name).
func (r hubRepo) folder() string {
	return r.typ + "s--" + strings.ReplaceAll(r.id, "/", "--")
}

func (h *Hub) storageDir(r hubRepo) string {
	return filepath.Join(h.cacheDir(), r.folder())
}

func hubPointerPath(storage, commit, filename string) string {
	return filepath.Join(storage, "snapshots", commit, filepath.FromSlash(filename))
}

func hubNoExistPath(storage, commit, filename string) string {
	return filepath.Join(storage, ".no_exist", commit, filepath.FromSlash(filename))
}

// hubLockPath is where huggingface_hub ≥ 0.21 locks a blob; taking the same
// lock keeps a Python process and this one from writing one blob together.
func (h *Hub) lockPath(r hubRepo, etag string) string {
	return filepath.Join(h.cacheDir(), ".locks", r.folder(), etag+".lock")
}

// hubIsCommit matches huggingface_hub's REGEX_COMMIT_HASH: a full, lower-case
// 40-digit sha. Shorter prefixes are revisions like any branch name.
func hubIsCommit(s string) bool {
	return len(s) == 40 && hubIsLowerHex(s)
}

func hubIsSHA256(s string) bool {
	return len(s) == 64 && hubIsLowerHex(s)
}

func hubIsLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ValidRepoID reports whether id is a valid Hub model id by huggingface_hub's
// validate_repo_id: "name" or "namespace/name" of ASCII letters, digits, '-',
// '_' and '.', each part starting and ending with a letter, digit or '_', the
// name at most 96 characters, no "--" or "..", not ending in ".git".
func ValidRepoID(id string) bool {
	parts := strings.Split(id, "/")
	if len(parts) > 2 || strings.Contains(id, "--") || strings.Contains(id, "..") || strings.HasSuffix(id, ".git") {
		return false
	}
	for i, p := range parts {
		if p == "" || (i == len(parts)-1 && len(p) > 96) {
			return false
		}
		if !hubIsWordByte(p[0]) || !hubIsWordByte(p[len(p)-1]) {
			return false
		}
		for j := 0; j < len(p); j++ {
			if c := p[j]; !hubIsWordByte(c) && c != '-' && c != '.' {
				return false
			}
		}
	}
	return true
}

func hubIsWordByte(c byte) bool {
	return c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// hubCheckRelPath accepts a slash-separated relative path that stays inside
// the folder it is joined to. File names, revisions (refs/pr/1) and names that
// come from the server all pass through it before touching the disk.
func hubCheckRelPath(what, p string) error {
	if p == "" {
		return fmt.Errorf("weights: empty %s", what)
	}
	if strings.ContainsAny(p, "\\\x00") || strings.HasPrefix(p, "/") {
		return fmt.Errorf("weights: unsafe %s %q", what, p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("weights: unsafe %s %q", what, p)
		}
	}
	return nil
}

// hubCheckComponent accepts a single path component (an etag or a commit
// sent by the server) that cannot escape the folder it names a file in.
func hubCheckComponent(what, s string) error {
	if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\\\x00") {
		return fmt.Errorf("weights: unsafe %s %q from the Hub", what, s)
	}
	return nil
}

// hubReadRef returns the commit a cached branch or tag points to. Python writes
// the sha without a newline; a hand-written ref may have one.
func hubReadRef(storage, revision string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(storage, "refs", filepath.FromSlash(revision)))
	if err != nil {
		return "", false
	}
	commit := strings.TrimSpace(string(b))
	if hubCheckComponent("commit", commit) != nil {
		return "", false
	}
	return commit, true
}

// hubWriteRef records revision → commit as huggingface_hub does (no newline),
// only when revision is not itself the commit and the ref changed.
func hubWriteRef(storage, revision, commit string) error {
	if revision == commit {
		return nil
	}
	if old, ok := hubReadRef(storage, revision); ok && old == commit {
		return nil
	}
	path := filepath.Join(storage, "refs", filepath.FromSlash(revision))
	return hubWriteSmallFile(path, []byte(commit))
}

// hubWriteSmallFile writes data to a temporary file beside path, then renames
// it into place, so that readers see the old or the new content, never half.
func hubWriteSmallFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

// hubMarkNoExist records, as huggingface_hub does, that a file is absent from a
// commit. It is a cache of a fact, so failing to write it is not an error.
func hubMarkNoExist(storage, commit, filename string) {
	path := hubNoExistPath(storage, commit, filename)
	if os.MkdirAll(filepath.Dir(path), 0o755) == nil {
		if f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			f.Close()
		}
	}
}

// hubLinkPointer makes snapshots/<commit>/<file> a relative symlink to the blob.
// The link is made under a temporary name and renamed over the pointer, so a
// concurrent reader sees either no file or the complete one.
func hubLinkPointer(pointer, blob string) error {
	rel, err := filepath.Rel(filepath.Dir(pointer), blob)
	if err != nil {
		return err
	}
	if target, err := os.Readlink(pointer); err == nil && target == rel {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(pointer), 0o755); err != nil {
		return err
	}
	var suffix [8]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return err
	}
	tmp := pointer + ".tmp-link-" + hex.EncodeToString(suffix[:])
	if err := os.Symlink(rel, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, pointer); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// lookupCache finds a file in the cache without the network, as
// huggingface_hub does offline: a branch or tag goes through refs/, a commit
// sha is used as it is.
func (h *Hub) lookupCache(r hubRepo, revision, filename string) (path, commit string, err *HubError) {
	storage := h.storageDir(r)
	repo := r.path()
	notCached := func(detail string) *HubError {
		return &HubError{Kind: ErrNotCached, Repo: repo, Revision: revision, File: filename, Detail: detail}
	}
	commit = revision
	if !hubIsCommit(revision) {
		var ok bool
		if commit, ok = hubReadRef(storage, revision); !ok {
			if _, statErr := os.Stat(storage); statErr != nil {
				return "", "", notCached("the repository was never downloaded into " + h.cacheDir())
			}
			return "", "", notCached(fmt.Sprintf("the cache %s has no record of revision %q (no refs/%s)", storage, revision, revision))
		}
	}
	pointer := hubPointerPath(storage, commit, filename)
	if fi, statErr := os.Stat(pointer); statErr == nil && fi.Mode().IsRegular() {
		return pointer, commit, nil
	}
	if _, statErr := os.Stat(hubNoExistPath(storage, commit, filename)); statErr == nil {
		return "", commit, &HubError{Kind: ErrEntryNotFound, Repo: repo, Revision: revision, File: filename,
			Detail: "no such file in the repository at commit " + commit + " (as recorded in the cache)"}
	}
	return "", commit, notCached(fmt.Sprintf("%s is not in the cached snapshot %s", filename, filepath.Join(storage, "snapshots", commit)))
}

// hubLock takes an exclusive flock on path, waiting for other goroutines or
// processes (Python's filelock included) that hold it, until ctx ends.
func hubLock(ctx context.Context, path string) (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o664)
		if err != nil {
			return nil, err
		}
		for {
			err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			if err == nil {
				break
			}
			if err != unix.EWOULDBLOCK && err != unix.EINTR {
				f.Close()
				return nil, fmt.Errorf("lock %s: %w", path, err)
			}
			select {
			case <-ctx.Done():
				f.Close()
				return nil, context.Cause(ctx)
			case <-time.After(50 * time.Millisecond):
			}
		}
		// A holder may unlink the lock file when it is done (older
		// huggingface_hub does); then the lock just taken is on a file
		// nobody else will open, and the real one must be taken again.
		held, err1 := f.Stat()
		current, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(held, current) {
			return func() {
				unix.Flock(int(f.Fd()), unix.LOCK_UN)
				f.Close()
			}, nil
		}
		f.Close()
	}
}
