package sae

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/weights"
)

// corpusRows are the documents written to the test Parquet file: the
// reference the reader's output is compared with. Each ends in a newline,
// as a plain-text file's document does once read line by line, so that the
// same texts as text files give the same token stream.
var corpusRows = []string{
	"First Citizen:\nBefore we proceed any further, hear me speak.\n",
	"All: Speak, speak.\n",
	"", // an empty document still ends with <|endoftext|>
	"You are all resolved rather to die than to famish? Café, naïve — ünïcödé.\n",
	"Resolved. resolved.\n",
	"First, you know Caius Marcius is chief enemy to the people.\n",
	"We know't, we know't.\n",
}

type corpusRow struct {
	ID   int64  `parquet:"id"`
	Text string `parquet:"text"`
}

// writeParquet writes rows with a small row-group size, so that reading
// crosses row groups.
func writeParquet(t *testing.T, texts []string) []byte {
	t.Helper()
	rows := make([]corpusRow, len(texts))
	for i, s := range texts {
		rows[i] = corpusRow{ID: int64(i), Text: s}
	}
	var b bytes.Buffer
	if err := parquet.Write(&b, rows, parquet.MaxRowsPerRowGroup(3)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// datasetHub is a loopback stand-in for the Hub's resolve endpoint of
// dataset repositories: HEAD/GET /datasets/{org}/{name}/resolve/{revision}/{path}
// answer with X-Repo-Commit, an ETag (the sha256, as for LFS files) and the
// bytes; anything else is 404 EntryNotFound.
type datasetHub struct {
	srv   *httptest.Server
	mu    sync.Mutex
	files map[string][]byte // "org/name/revision/path" → content
	seen  []string          // request paths
}

func newDatasetHub(t *testing.T, files map[string][]byte) (*datasetHub, *weights.Hub) {
	d := &datasetHub{files: files}
	d.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		d.seen = append(d.seen, r.Method+" "+r.URL.EscapedPath())
		d.mu.Unlock()
		rest, ok := strings.CutPrefix(r.URL.Path, "/datasets/")
		parts := strings.SplitN(rest, "/", 5)
		if !ok || len(parts) < 5 || parts[2] != "resolve" {
			http.NotFound(w, r)
			return
		}
		data, ok := d.files[parts[0]+"/"+parts[1]+"/"+parts[3]+"/"+parts[4]]
		if !ok {
			w.Header().Set("X-Error-Code", "EntryNotFound")
			w.Header().Set("X-Repo-Commit", strings.Repeat("a", 40))
			http.Error(w, "Entry not found", http.StatusNotFound)
			return
		}
		sum := sha256.Sum256(data)
		w.Header().Set("X-Repo-Commit", strings.Repeat("a", 40))
		w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:])+`"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(d.srv.Close)
	return d, &weights.Hub{Endpoint: d.srv.URL, CacheDir: t.TempDir(), Client: d.srv.Client()}
}

func (d *datasetHub) requests() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.seen)
}

// tokensOf is the token stream the corpus rows should give: each row's
// bytes (byteTokenizer), then <|endoftext|>.
func tokensOf(texts []string) []int {
	var out []int
	for _, s := range texts {
		out = append(out, byteTokenizer{}.Encode(s)...)
		out = append(out, byteTokenizer{}.EOT())
	}
	return out
}

func TestParseHFURI(t *testing.T) {
	tests := []struct {
		uri            string
		repo, rev, pth string
		bad            string
	}{
		{uri: "hf://datasets/org/ds/data/train.parquet", repo: "org/ds", pth: "data/train.parquet"},
		{uri: "hf://datasets/org/ds@v1.0/train.parquet", repo: "org/ds", rev: "v1.0", pth: "train.parquet"},
		// HfFileSystem quotes a revision with slashes, and also reads the
		// special refs unquoted.
		{uri: "hf://datasets/org/ds@refs%2Fconvert%2Fparquet/default/train/0000.parquet", repo: "org/ds", rev: "refs/convert/parquet", pth: "default/train/0000.parquet"},
		{uri: "hf://datasets/org/ds@refs/convert/parquet/default/train/0000.parquet", repo: "org/ds", rev: "refs/convert/parquet", pth: "default/train/0000.parquet"},
		{uri: "hf://datasets/org/ds@refs/pr/3/a.parquet", repo: "org/ds", rev: "refs/pr/3", pth: "a.parquet"},
		{uri: "hf://org/model/model.safetensors", bad: "only dataset repositories"},
		{uri: "hf://datasets/org/ds", bad: "no file path"},
		{uri: "hf://datasets/ds", bad: "no ORG/NAME"},
		{uri: "hf://datasets/org/ds@/x.parquet", bad: "empty revision"},
	}
	for _, tc := range tests {
		d, err := parseHFURI(tc.uri)
		if tc.bad != "" {
			if err == nil || !strings.Contains(err.Error(), tc.bad) {
				t.Errorf("%s: got %v, want an error saying %q", tc.uri, err, tc.bad)
			}
			continue
		}
		if err != nil || d != (hfDatasetFile{repo: tc.repo, revision: tc.rev, path: tc.pth}) {
			t.Errorf("%s: got %+v, %v", tc.uri, d, err)
		}
	}
}

// TestParquetCorpusFromHub reads a Parquet file of a dataset repository
// through the Hub and checks the documents against the rows written, and the
// harvested activations against those of the same texts as plain-text files.
func TestParquetCorpusFromHub(t *testing.T) {
	data := writeParquet(t, corpusRows)
	d, hub := newDatasetHub(t, map[string][]byte{"org/ds/main/data/train.parquet": data})
	const entry = "hf://datasets/org/ds/data/train.parquet"
	ctx := context.Background()

	// The documents read are the rows written, in order.
	ts := newTokenStream(byteTokenizer{}, StoreConfig{Files: []string{entry}, Hub: hub, TextColumn: DefaultTextColumn, MaxDocBytes: 1 << 20}, false)
	path, err := ts.localPath(ctx, entry)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(path, filepath.Join("datasets--org--ds", "snapshots")) {
		t.Errorf("downloaded to %s, want the Hub cache's datasets--org--ds folder", path)
	}
	r, err := openDocs(path, 1<<20, DefaultTextColumn)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		text, end, err := r.next()
		if err != nil {
			break
		}
		if !end {
			t.Error("a Parquet row must be a whole document")
		}
		got = append(got, text)
	}
	r.close()
	if !slices.Equal(got, corpusRows) {
		t.Errorf("texts read %q\nwant the rows written %q", got, corpusRows)
	}
	if reqs := d.requests(); len(reqs) == 0 || reqs[0] != "HEAD /datasets/org/ds/resolve/main/data/train.parquet" {
		t.Errorf("requests %v, want a HEAD on the dataset resolve URL first", reqs)
	}

	// The token stream is each row's bytes then <|endoftext|>.
	want := tokensOf(corpusRows)
	const ctxSize = 9
	windows, err := CorpusWindows(ctx, byteTokenizer{}, StoreConfig{Files: []string{entry}, Hub: hub, ContextSize: ctxSize}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if flat := slices.Concat(windows...); len(windows) != len(want)/ctxSize || !slices.Equal(flat, want[:len(flat)]) {
		t.Fatalf("windows %v do not cut the expected stream %v", windows, want)
	}

	// Harvested rows equal those of the same texts as plain-text files, one
	// file per document (each file is one document ending in <|endoftext|>).
	dir := t.TempDir()
	var txtFiles []string
	for i, s := range corpusRows {
		p := filepath.Join(dir, fmt.Sprintf("%02d.txt", i))
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		txtFiles = append(txtFiles, p)
	}
	m := tinyModel(t, gpt2.Processing{})
	harvest := func(files []string, hub *weights.Hub) [][]float32 {
		src, err := NewModelSource(m, byteTokenizer{}, StoreConfig{Hook: "blocks.1.hook_resid_pre", Files: files, Hub: hub,
			ContextSize: 8, PrependBOS: true, ModelBatch: 2, BufferRows: 24, SinglePass: true, Seed: 3})
		if err != nil {
			t.Fatal(err)
		}
		return collectRows(t, src, 4)
	}
	fromParquet := harvest([]string{entry}, hub)
	fromText := harvest(txtFiles, nil)
	if len(fromParquet) == 0 || len(fromParquet) != len(fromText) {
		t.Fatalf("%d rows from Parquet, %d from text", len(fromParquet), len(fromText))
	}
	for i := range fromParquet {
		if !slices.Equal(fromParquet[i], fromText[i]) {
			t.Fatalf("row %d differs between the Parquet and the text corpus", i)
		}
	}
}

func TestParquetCorpusErrors(t *testing.T) {
	good := writeParquet(t, corpusRows[:2])
	_, hub := newDatasetHub(t, map[string][]byte{
		"org/ds/main/good.parquet": good,
		"org/ds/main/bad.parquet":  []byte("PAR1 this is not a parquet file at all PAR1"),
		"org/ds/main/junk.parquet": bytes.Repeat([]byte{0x5a}, 300),
	})
	ctx := context.Background()
	tests := []struct {
		name   string
		files  []string
		column string
		hub    *weights.Hub
		says   []string
	}{
		{"bad parquet", []string{"hf://datasets/org/ds/bad.parquet"}, "", hub, []string{"bad.parquet", "not a readable Parquet file"}},
		{"junk parquet", []string{"hf://datasets/org/ds/junk.parquet"}, "", hub, []string{"junk.parquet", "Parquet"}},
		{"missing column", []string{"hf://datasets/org/ds/good.parquet"}, "content", hub, []string{`no column "content"`, "id, text"}},
		{"non-string column", []string{"hf://datasets/org/ds/good.parquet"}, "id", hub, []string{`column "id"`, "not strings"}},
		{"missing file", []string{"hf://datasets/org/ds/nope.parquet"}, "", hub, []string{"nope.parquet", "no such file in the repository"}},
		{"no hub", []string{"hf://datasets/org/ds/good.parquet"}, "", nil, []string{"needs a Hub client"}},
		{"model uri", []string{"hf://org/m/x.parquet"}, "", hub, []string{"only dataset repositories"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CorpusWindows(ctx, byteTokenizer{}, StoreConfig{Files: tc.files, Hub: tc.hub, TextColumn: tc.column, ContextSize: 4}, 10)
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}

	// Nullable, dictionary-encoded, Snappy-compressed columns, as pyarrow
	// writes Hugging Face datasets: null rows are skipped.
	one, two := "Speak, speak.\n", "Resolved.\n"
	type nullableRow struct {
		Text *string `parquet:"text,optional,dict,snappy"`
	}
	var nb bytes.Buffer
	if err := parquet.Write(&nb, []nullableRow{{&one}, {nil}, {&two}}); err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(t.TempDir(), "nullable.parquet")
	if err := os.WriteFile(local, nb.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	want := tokensOf([]string{one, two})
	wins, err := CorpusWindows(ctx, byteTokenizer{}, StoreConfig{Files: []string{local}, ContextSize: len(want)}, 10)
	if err != nil || len(wins) != 1 || !slices.Equal(wins[0], want) {
		t.Errorf("nullable column: %v %v, want %v", wins, err, want)
	}

	// A nil Hub is refused when the source is made, before any model runs.
	m := tinyModel(t, gpt2.Processing{})
	if _, err := NewModelSource(m, byteTokenizer{}, StoreConfig{Hook: "blocks.0.hook_resid_pre",
		Files: []string{"hf://datasets/org/ds/good.parquet"}, ContextSize: 4}); err == nil || !strings.Contains(err.Error(), "needs a Hub client") {
		t.Errorf("nil Hub: got %v", err)
	}
	// The column name is configurable.
	wins, err = CorpusWindows(ctx, byteTokenizer{}, StoreConfig{Files: []string{"hf://datasets/org/ds/good.parquet"}, Hub: hub,
		TextColumn: "text", ContextSize: 5}, 100)
	if want := tokensOf(corpusRows[:2]); err != nil || !slices.Equal(slices.Concat(wins...), want[:len(wins)*5]) {
		t.Errorf("good file: %v %v", wins, err)
	}
}
