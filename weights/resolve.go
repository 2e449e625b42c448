package weights

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// CanonicalModelID maps the legacy ids of the GPT-2 family to the
// repositories they live in since the Hub moved its un-namespaced models
// into organisations (2024): gpt2, gpt2-medium, gpt2-large and gpt2-xl to
// openai-community/…, distilgpt2 to distilbert/distilgpt2. Any other id is
// returned unchanged.
func CanonicalModelID(id string) string {
	switch id {
	case "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl":
		return "openai-community/" + id
	case "distilgpt2":
		return "distilbert/distilgpt2"
	}
	return id
}

// Resolve turns what a user names as a model into a local folder holding its
// config.json and weights:
//
//   - an existing folder with config.json and model.safetensors (or
//     model.safetensors.index.json and its shards) is used as it is;
//   - a path to a .safetensors file is used with the config.json beside it;
//   - anything else must be a Hub model id ("org/name", or an alias of
//     CanonicalModelID). Its config.json is downloaded at revision ("" means
//     "main"), then, at the commit that revision resolved to, model.safetensors
//     — or, when the repository has none, model.safetensors.index.json and
//     every shard it lists — and the tokenizer files vocab.json, merges.txt and
//     tokenizer.json that exist. Dir is the snapshot folder in h's cache.
//
// A nil h means a zero Hub (public Hub, default cache, no token).
func Resolve(ctx context.Context, h *Hub, ref, revision string) (*Source, error) {
	src, _, err := resolveRef(ctx, h, ref, revision)
	return src, err
}

// resolveRef also returns the path OpenCheckpoint should open: the folder, or
// the .safetensors file the user named.
func resolveRef(ctx context.Context, h *Hub, ref, revision string) (*Source, string, error) {
	if ref == "" {
		return nil, "", errors.New("weights: no model given (a folder, a .safetensors file or a Hub id such as gpt2)")
	}
	if src, path, err := resolveLocalRef(ref); src != nil || err != nil {
		return src, path, err
	}
	repo := CanonicalModelID(ref)
	if hubLooksLikePath(ref) || !ValidRepoID(repo) {
		return nil, "", fmt.Errorf("weights: %q: no such folder or file, and not a Hub model id (\"name\" or \"org/name\")", ref)
	}
	if h == nil {
		h = &Hub{}
	}
	if revision == "" {
		revision = defaultRevision
	}

	configPath, commit, err := h.Download(ctx, repo, revision, ConfigFileName)
	if err != nil {
		if errors.Is(err, ErrRepoNotFound) || errors.Is(err, ErrUnauthorized) ||
			(errors.Is(err, ErrNotCached) && !strings.Contains(ref, "/")) {
			err = fmt.Errorf("%w (and %q is not a local folder or file)", err, ref)
		}
		return nil, "", err
	}
	// Everything else is fetched at that commit, so that a branch moving
	// meanwhile cannot mix files of two versions.
	if err := hubDownloadWeights(ctx, h, repo, commit); err != nil {
		return nil, "", err
	}
	// Tokenizer files are fetched when present; a repository without them is fine.
	for _, name := range []string{"vocab.json", "merges.txt", "tokenizer.json"} {
		if _, _, err := h.Download(ctx, repo, commit, name); err != nil && !hubIsMissing(err) {
			return nil, "", err
		}
	}
	dir, err := filepath.Abs(filepath.Dir(configPath))
	if err != nil {
		return nil, "", err
	}
	return &Source{Ref: ref, Repo: repo, Revision: revision, Commit: commit, Dir: dir}, dir, nil
}

// hubIsMissing reports a file that the repository does not have, or that the
// offline cache does not hold.
func hubIsMissing(err error) bool {
	return errors.Is(err, ErrEntryNotFound) || errors.Is(err, ErrNotCached)
}

func hubDownloadWeights(ctx context.Context, h *Hub, repo, commit string) error {
	_, _, err := h.Download(ctx, repo, commit, ModelFileName)
	if err == nil || !hubIsMissing(err) {
		return err
	}
	indexPath, _, indexErr := h.Download(ctx, repo, commit, ShardIndexFileName)
	if indexErr != nil {
		if !hubIsMissing(indexErr) {
			return indexErr
		}
		if errors.Is(err, ErrNotCached) || errors.Is(indexErr, ErrNotCached) {
			return fmt.Errorf("weights: %s at commit %s: neither %s nor %s is in the cache: %w",
				repo, commit, ModelFileName, ShardIndexFileName, err)
		}
		return fmt.Errorf("weights: %s at commit %s has neither %s nor %s (only safetensors checkpoints are supported): %w",
			repo, commit, ModelFileName, ShardIndexFileName, err)
	}
	// The same reader OpenCheckpoint uses, so that exactly the shards it will
	// open are fetched; it also refuses names that would leave the snapshot.
	index, err := readShardIndex(indexPath)
	if err != nil {
		return err
	}
	for _, shard := range index.shards() {
		if _, _, err := h.Download(ctx, repo, commit, shard); err != nil {
			return err
		}
	}
	return nil
}

// resolveLocalRef handles a ref that exists on disk. It returns a nil Source and
// no error when nothing is there.
func resolveLocalRef(ref string) (*Source, string, error) {
	fi, err := os.Stat(ref)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrInvalid) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("weights: %w", err)
	}
	abs, err := filepath.Abs(ref)
	if err != nil {
		return nil, "", fmt.Errorf("weights: %w", err)
	}
	dir, open := abs, abs
	switch {
	case fi.IsDir():
		if !hubIsFile(filepath.Join(dir, ModelFileName)) && !hubIsFile(filepath.Join(dir, ShardIndexFileName)) {
			return nil, "", fmt.Errorf("weights: %s: folder has neither %s nor %s", ref, ModelFileName, ShardIndexFileName)
		}
	case strings.HasSuffix(abs, ".safetensors"):
		dir = filepath.Dir(abs)
	case filepath.Base(abs) == ShardIndexFileName:
		dir = filepath.Dir(abs)
		open = dir
	default:
		return nil, "", fmt.Errorf("weights: %s: not a model folder, a .safetensors file or a Hub model id", ref)
	}
	if !hubIsFile(filepath.Join(dir, ConfigFileName)) {
		return nil, "", fmt.Errorf("weights: %s: no %s in %s", ref, ConfigFileName, dir)
	}
	return &Source{Ref: ref, Dir: dir}, open, nil
}

func hubIsFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// hubLooksLikePath tells a path the user meant ("./gpt2", "/models/x",
// "w.safetensors") from a Hub id, so that a missing path is reported as
// such instead of being looked up on the Hub.
func hubLooksLikePath(ref string) bool {
	return strings.HasPrefix(ref, ".") || strings.HasPrefix(ref, "/") || strings.HasPrefix(ref, "~") ||
		strings.Contains(ref, `\`) || strings.Count(ref, "/") > 1 ||
		strings.HasSuffix(ref, ".safetensors") || strings.HasSuffix(ref, ".json")
}

// Open is Resolve followed by OpenCheckpoint: it finds or downloads the model
// ref names and opens it, with Checkpoint.Source telling where it came from
// (repository, revision and commit for Hub models).
func Open(ctx context.Context, h *Hub, ref, revision string) (*Checkpoint, error) {
	src, path, err := resolveRef(ctx, h, ref, revision)
	if err != nil {
		return nil, err
	}
	ck, err := OpenCheckpoint(path)
	if err != nil {
		return nil, err
	}
	ck.Source = *src
	return ck, nil
}
