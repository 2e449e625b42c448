package weights

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// tinyCheckpoint writes a valid one-layer GPT-2 with SaveCheckpoint and
// returns its files by name.
func tinyCheckpoint(t *testing.T, opts SaveOptions) (map[string][]byte, *Config) {
	t.Helper()
	cfg := &Config{ModelType: "gpt2", VocabSize: 16, NPositions: 8, NEmbd: 8, NLayer: 1, NHead: 2,
		ActivationFunction: "gelu_new", LayerNormEpsilon: 1e-5, BOSTokenID: 15, EOSTokenID: 15}
	var params []Tensor
	for i, spec := range cfg.ParamSpecs() {
		n := 1
		for _, d := range spec.Shape {
			n *= d
		}
		data := make([]float32, n)
		for j, b := range fakeBytes(n, uint64(i)+100) {
			data[j] = float32(int(b)-128) / 256
		}
		params = append(params, Tensor{Name: spec.Name, Shape: spec.Shape, Data: data})
	}
	dir := t.TempDir()
	if err := SaveCheckpoint(dir, cfg, params, opts); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files, cfg
}

// hubRepoFiles turns checkpoint files into a fake repository: safetensors
// files are LFS, the rest regular git files, as on the Hub.
func hubRepoFiles(files map[string][]byte, extra ...string) map[string]fakeHubFile {
	out := map[string]fakeHubFile{}
	for name, b := range files {
		out[name] = fakeHubFile{data: b, lfs: strings.HasSuffix(name, ".safetensors")}
	}
	for _, name := range extra {
		out[name] = fakeHubFile{data: []byte("tokenizer data for " + name)}
	}
	return out
}

func snapshotFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func TestResolveHubModel(t *testing.T) {
	single, _ := tinyCheckpoint(t, SaveOptions{})
	sharded, _ := tinyCheckpoint(t, SaveOptions{ShardBytes: 2000})
	var shardNames []string
	for name := range sharded {
		if strings.HasPrefix(name, "model-") {
			shardNames = append(shardNames, name)
		}
	}
	if len(shardNames) < 2 {
		t.Fatalf("test checkpoint has %d shards, want several", len(shardNames))
	}

	f := newFakeHub(t)
	f.addRepo("openai-community/gpt2", commitA, hubRepoFiles(single, "vocab.json", "merges.txt", "tokenizer.json"))
	f.addRepo("distilbert/distilgpt2", commitA, hubRepoFiles(single, "vocab.json", "merges.txt"))
	f.addRepo("org/sharded", commitB, hubRepoFiles(sharded))

	tests := []struct {
		ref, revision, repo, commit string
		files                       []string
		absent                      []string // recorded in .no_exist
	}{
		{"gpt2", "", "openai-community/gpt2", commitA,
			[]string{"config.json", "merges.txt", "model.safetensors", "tokenizer.json", "vocab.json"}, nil},
		{"distilgpt2", "main", "distilbert/distilgpt2", commitA,
			[]string{"config.json", "merges.txt", "model.safetensors", "vocab.json"}, []string{"tokenizer.json"}},
		{"org/sharded", commitB, "org/sharded", commitB,
			append([]string{"config.json", "model.safetensors.index.json"}, shardNames...),
			[]string{"model.safetensors", "vocab.json", "merges.txt", "tokenizer.json"}},
	}
	h := f.newHub("")
	for _, tc := range tests {
		t.Run(tc.ref, func(t *testing.T) {
			src, err := Resolve(context.Background(), h, tc.ref, tc.revision)
			if err != nil {
				t.Fatal(err)
			}
			wantRevision := tc.revision
			if wantRevision == "" {
				wantRevision = "main"
			}
			wantDir := filepath.Join(h.CacheDir, "models--"+strings.ReplaceAll(tc.repo, "/", "--"), "snapshots", tc.commit)
			if *src != (Source{Ref: tc.ref, Repo: tc.repo, Revision: wantRevision, Commit: tc.commit, Dir: wantDir}) {
				t.Errorf("source %+v", *src)
			}
			sort.Strings(tc.files)
			if got := snapshotFiles(t, src.Dir); strings.Join(got, " ") != strings.Join(tc.files, " ") {
				t.Errorf("snapshot holds %v, want %v", got, tc.files)
			}
			for _, name := range tc.files {
				b, err := os.ReadFile(filepath.Join(src.Dir, name))
				want := single[name]
				if tc.repo == "org/sharded" {
					want = sharded[name]
				}
				if want == nil {
					want = []byte("tokenizer data for " + name)
				}
				if err != nil || string(b) != string(want) {
					t.Errorf("%s: %d bytes (%v), want %d", name, len(b), err, len(want))
				}
			}
			for _, name := range tc.absent {
				if _, err := os.Stat(filepath.Join(filepath.Dir(filepath.Dir(src.Dir)), ".no_exist", tc.commit, name)); err != nil {
					t.Errorf("absence of %s not recorded: %v", name, err)
				}
			}
		})
	}

	// Once cached, a second resolution asks only where the branch points:
	// everything else is looked up at that commit, in the cache.
	f.take()
	if _, err := Resolve(context.Background(), h, "distilgpt2", ""); err != nil {
		t.Fatal(err)
	}
	if reqs := f.take(); len(reqs) != 1 || reqs[0].path != "/distilbert/distilgpt2/resolve/main/config.json" {
		t.Errorf("cached model: requests %+v, want one HEAD for config.json", reqs)
	}

	// Offline, the same models resolve from the cache alone.
	offline := &Hub{CacheDir: h.CacheDir, Offline: true, Client: &http.Client{Transport: failTransport{t}}}
	for _, tc := range tests {
		src, err := Resolve(context.Background(), offline, tc.ref, tc.revision)
		if err != nil {
			t.Errorf("offline %s: %v", tc.ref, err)
			continue
		}
		if src.Commit != tc.commit {
			t.Errorf("offline %s: commit %s", tc.ref, src.Commit)
		}
	}
}

func TestResolveHubErrors(t *testing.T) {
	f := newFakeHub(t)
	f.addRepo("org/nothing", commitA, map[string]fakeHubFile{"config.json": {data: []byte("{}")}, "pytorch_model.bin": {data: []byte("x"), lfs: true}})
	h := f.newHub("")
	ctx := context.Background()

	_, err := Resolve(ctx, h, "org/nothing", "")
	if !errors.Is(err, ErrEntryNotFound) || !strings.Contains(err.Error(), "neither model.safetensors nor model.safetensors.index.json") {
		t.Errorf("repo without safetensors: %v", err)
	}
	_, err = Resolve(ctx, h, "org/missing", "")
	if !errors.Is(err, ErrRepoNotFound) || !strings.Contains(err.Error(), "not a local folder") {
		t.Errorf("missing repo: %v", err)
	}
	offline := &Hub{CacheDir: t.TempDir(), Offline: true, Client: &http.Client{Transport: failTransport{t}}}
	_, err = Resolve(ctx, offline, "gpt2", "")
	if !errors.Is(err, ErrNotCached) || !strings.Contains(err.Error(), "openai-community/gpt2") || !strings.Contains(err.Error(), "offline") {
		t.Errorf("offline, nothing cached: %v", err)
	}
}

func TestResolveLocal(t *testing.T) {
	single, _ := tinyCheckpoint(t, SaveOptions{})
	sharded, _ := tinyCheckpoint(t, SaveOptions{ShardBytes: 2000})
	root := t.TempDir()
	write := func(dir string, files map[string][]byte, skip ...string) string {
		path := filepath.Join(root, dir)
		os.MkdirAll(path, 0o755)
	next:
		for name, b := range files {
			for _, s := range skip {
				if name == s {
					continue next
				}
			}
			os.WriteFile(filepath.Join(path, name), b, 0o644)
		}
		return path
	}
	singleDir := write("single", single)
	shardedDir := write("sharded", sharded)
	noConfig := write("noconfig", single, "config.json")
	noWeights := write("noweights", map[string][]byte{"config.json": single["config.json"]})
	os.WriteFile(filepath.Join(root, "notes.txt"), []byte("x"), 0o644)

	h := &Hub{CacheDir: t.TempDir(), Client: &http.Client{Transport: failTransport{t}}}
	tests := []struct {
		ref, dir, says string
	}{
		{ref: singleDir, dir: singleDir},
		{ref: shardedDir, dir: shardedDir},
		{ref: filepath.Join(singleDir, "model.safetensors"), dir: singleDir},
		{ref: filepath.Join(shardedDir, "model.safetensors.index.json"), dir: shardedDir},
		{ref: filepath.Join(root, "missing", "dir"), says: "no such folder or file, and not a Hub model id"},
		{ref: "./missing/dir", says: "no such folder or file, and not a Hub model id"},
		{ref: "missing.safetensors", says: "no such folder or file"},
		{ref: noConfig, says: "no config.json"},
		{ref: filepath.Join(noConfig, "model.safetensors"), says: "no config.json"},
		{ref: noWeights, says: "neither model.safetensors nor model.safetensors.index.json"},
		{ref: filepath.Join(root, "notes.txt"), says: "not a model folder"},
		{ref: "", says: "no model given"},
	}
	for _, tc := range tests {
		src, err := Resolve(context.Background(), h, tc.ref, "")
		if tc.says != "" {
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("Resolve(%q): %v, want an error saying %q", tc.ref, err, tc.says)
			}
			continue
		}
		if err != nil {
			t.Errorf("Resolve(%q): %v", tc.ref, err)
			continue
		}
		if *src != (Source{Ref: tc.ref, Dir: tc.dir}) {
			t.Errorf("Resolve(%q) = %+v", tc.ref, *src)
		}
	}

	// A relative folder name is used when it exists, even if it could be a Hub id.
	wd, _ := os.Getwd()
	if err := os.Chdir(root); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	src, err := Resolve(context.Background(), h, "single", "")
	if err != nil || src.Dir != singleDir || src.Repo != "" {
		t.Errorf("relative folder: %+v %v", src, err)
	}
}

func TestOpen(t *testing.T) {
	single, cfg := tinyCheckpoint(t, SaveOptions{})
	sharded, _ := tinyCheckpoint(t, SaveOptions{ShardBytes: 2000})
	f := newFakeHub(t)
	f.addRepo("openai-community/gpt2", commitA, hubRepoFiles(single, "vocab.json", "merges.txt"))
	f.addRepo("org/sharded", commitB, hubRepoFiles(sharded))
	h := f.newHub("")
	local := t.TempDir()
	for name, b := range single {
		os.WriteFile(filepath.Join(local, name), b, 0o644)
	}

	for _, tc := range []struct {
		ref  string
		want Source
	}{
		{"gpt2", Source{Ref: "gpt2", Repo: "openai-community/gpt2", Revision: "main", Commit: commitA,
			Dir: filepath.Join(h.CacheDir, "models--openai-community--gpt2", "snapshots", commitA)}},
		{"org/sharded", Source{Ref: "org/sharded", Repo: "org/sharded", Revision: "main", Commit: commitB,
			Dir: filepath.Join(h.CacheDir, "models--org--sharded", "snapshots", commitB)}},
		{local, Source{Ref: local, Dir: local}},
		{filepath.Join(local, "model.safetensors"), Source{Ref: filepath.Join(local, "model.safetensors"), Dir: local}},
	} {
		ck, err := Open(context.Background(), h, tc.ref, "")
		if err != nil {
			t.Errorf("Open(%q): %v", tc.ref, err)
			continue
		}
		if ck.Source != tc.want {
			t.Errorf("Open(%q).Source = %+v, want %+v", tc.ref, ck.Source, tc.want)
		}
		if len(ck.Params) < len(cfg.ParamSpecs()) {
			t.Errorf("Open(%q): %d params, want %d", tc.ref, len(ck.Params), len(cfg.ParamSpecs()))
		}
		ck.Close()
	}
}
