package weights

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The URL and cache folder of a dataset file are huggingface_hub's:
// hf_hub_url(repo_id, filename, repo_type="dataset") puts
// REPO_TYPES_URL_PREFIXES["dataset"] = "datasets/" before the id, and
// repo_folder_name(repo_id="org/ds", repo_type="dataset") is
// "datasets--org--ds" (f"{repo_type}s" and the id's parts joined by "--").
func TestDownloadDataset(t *testing.T) {
	f := newFakeHub(t)
	parquet := fakeBytes(50_000, 21)
	readme := []byte("# a dataset\n")
	f.addRepo("datasets/org/ds", commitA, map[string]fakeHubFile{
		"data/train-00000-of-00001.parquet": {data: parquet, lfs: true},
		"README.md":                         {data: readme},
	})
	// A model with the same id must not be confused with the dataset.
	modelReadme := []byte("# a model\n")
	f.addRepo("org/ds", commitB, map[string]fakeHubFile{"README.md": {data: modelReadme}})
	h := f.newHub("hf_secret")
	ctx := context.Background()

	tests := []struct {
		file string
		want []byte
		lfs  bool
	}{
		{"data/train-00000-of-00001.parquet", parquet, true},
		{"README.md", readme, false},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			path, commit, err := h.DownloadDataset(ctx, "org/ds", "", tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if commit != commitA {
				t.Errorf("commit %s, want %s", commit, commitA)
			}
			if want := filepath.Join(h.CacheDir, "datasets--org--ds", "snapshots", commitA, filepath.FromSlash(tc.file)); path != want {
				t.Errorf("path %s, want %s", path, want)
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Errorf("content differs from the served file (err %v)", err)
			}
			ref, err := os.ReadFile(filepath.Join(h.CacheDir, "datasets--org--ds", "refs", "main"))
			if err != nil || string(ref) != commitA {
				t.Errorf("refs/main = %q, %v; want %s", ref, err, commitA)
			}
			reqs := f.take()
			if len(reqs) == 0 || reqs[0].method != "HEAD" || reqs[0].path != "/datasets/org/ds/resolve/main/"+tc.file {
				t.Errorf("requests %+v, want a HEAD on /datasets/org/ds/resolve/main/%s first", reqs, tc.file)
			}
			if tc.lfs {
				if _, err := os.Stat(filepath.Join(h.CacheDir, ".locks", "datasets--org--ds", fakeSHA256(tc.want)+".lock")); err != nil {
					t.Errorf("no lock file where huggingface_hub takes it: %v", err)
				}
			}
		})
	}

	// The model repository of the same id has its own folder and content.
	path, commit, err := h.Download(ctx, "org/ds", "", "README.md")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); commit != commitB || !bytes.Equal(got, modelReadme) ||
		!strings.Contains(path, "models--org--ds") {
		t.Errorf("model download %s at %s gave %q; want the model's README under models--org--ds", path, commit, got)
	}

	// Offline, the cached dataset file is found again without the network.
	offline := &Hub{CacheDir: h.CacheDir, Offline: true, Client: &http.Client{Transport: failTransport{t}}}
	path, commit, err = offline.DownloadDataset(ctx, "org/ds", "main", "README.md")
	if err != nil || commit != commitA {
		t.Fatalf("offline: %s %s %v", path, commit, err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, readme) {
		t.Errorf("offline read %q, want %q", got, readme)
	}
}

func TestDownloadDatasetErrors(t *testing.T) {
	f := newFakeHub(t)
	f.addRepo("datasets/org/ds", commitA, map[string]fakeHubFile{"README.md": {data: []byte("x")}})
	h := f.newHub("")
	ctx := context.Background()

	tests := []struct {
		name, repo, file string
		kind             error
		says             []string
	}{
		{"missing file", "org/ds", "nope.parquet", ErrEntryNotFound, []string{"datasets/org/ds", "nope.parquet"}},
		{"missing repo", "org/none", "README.md", ErrRepoNotFound, []string{"datasets/org/none", "check the dataset id"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := h.DownloadDataset(ctx, tc.repo, "", tc.file)
			if !errors.Is(err, tc.kind) {
				t.Fatalf("got %v, want %v", err, tc.kind)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
	// Only the dataset exists: a model download of its id must not find it.
	if _, _, err := h.Download(ctx, "org/ds", "", "README.md"); !errors.Is(err, ErrRepoNotFound) {
		t.Errorf("model download of a dataset id: got %v, want ErrRepoNotFound", err)
	}
	if _, _, err := h.DownloadDataset(ctx, "org//bad", "", "README.md"); err == nil || !strings.Contains(err.Error(), "dataset id") {
		t.Errorf("invalid id: got %v, want an error about the dataset id", err)
	}
}
