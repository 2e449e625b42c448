package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
)

// TestSAECorpusFromHubDataset trains and evaluates with --corpus naming a
// Parquet file of a (loopback) Hub dataset repository, and checks the
// results equal those over the same texts given as plain-text files, one
// file per row.
func TestSAECorpusFromHubDataset(t *testing.T) {
	model := tinyCheckpoint(t)
	raw, err := os.ReadFile(shakespeareCorpus(t, 300))
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		Text string `parquet:"text"`
	}
	var rows []row
	var txtFiles []string
	dir := t.TempDir()
	for i, para := range strings.Split(strings.TrimSpace(string(raw)), "\n\n") {
		text := para + "\n" // as a text file's document reads back
		rows = append(rows, row{Text: text})
		p := filepath.Join(dir, fmt.Sprintf("%03d.txt", i))
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		txtFiles = append(txtFiles, p)
	}
	var pq bytes.Buffer
	if err := parquet.Write(&pq, rows, parquet.MaxRowsPerRowGroup(16)); err != nil {
		t.Fatal(err)
	}
	const commit = "0123456789abcdef0123456789abcdef01234567"
	hub := miniHub(t, "datasets/org/shakespeare", commit, map[string][]byte{"data/train.parquet": pq.Bytes()})
	const uri = "hf://datasets/org/shakespeare/data/train.parquet"
	cache := t.TempDir()
	env := map[string]string{"HF_ENDPOINT": hub.URL, "HF_HUB_CACHE": cache, "HF_HOME": cache}
	cli := func(args ...string) outcome {
		var stdout, stderr bytes.Buffer
		code := run(args, strings.NewReader(""), &stdout, &stderr, func(k string) string { return env[k] })
		return outcome{code, stdout.String(), stderr.String()}
	}

	fromHub := filepath.Join(t.TempDir(), "sae-hub")
	fromText := filepath.Join(t.TempDir(), "sae-text")
	trHub := mustDecode[saeTrainResult](t, cli(append(trainArgs(model, uri, fromHub), "--format", "json")...))
	trText := mustDecode[saeTrainResult](t, cli(append(trainArgs(model, strings.Join(txtFiles, ","), fromText), "--format", "json")...))
	if len(trHub.Corpus) != 1 || trHub.Corpus[0] != uri {
		t.Errorf("recorded corpus %v, want the hf:// URI", trHub.Corpus)
	}
	// Throughput is the only field that may differ between the two runs.
	for _, tr := range []*saeTrainResult{trHub, trText} {
		for i := range tr.History {
			tr.History[i].TokensPerSecond = 0
		}
	}
	if trHub.Final == nil || trText.Final == nil || len(trHub.History) == 0 || !reflect.DeepEqual(trHub.History, trText.History) {
		t.Errorf("training over the Hub dataset differs from training over the same texts as files:\n%+v\n%+v", trHub.Final, trText.Final)
	}

	eval := func(corpus string) *saeEvalResult {
		return mustDecode[saeEvalResult](t, cli("sae", "eval", "--model", model, "--sae", fromHub, "--corpus", corpus,
			"--windows", "8", "--format", "json", "--quiet"))
	}
	evHub, evText := eval(uri), eval(strings.Join(txtFiles, ","))
	if evHub.Windows != 8 || !reflect.DeepEqual(evHub.Metrics, evText.Metrics) {
		t.Errorf("eval over the Hub dataset (%d windows) %+v\ndiffers from over the files %+v", evHub.Windows, evHub.Metrics, evText.Metrics)
	}

	// A missing column is reported with the columns present.
	bad := filepath.Join(t.TempDir(), "bad.parquet")
	var other bytes.Buffer
	if err := parquet.Write(&other, []struct {
		Body string `parquet:"body"`
	}{{"x"}}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, other.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out := cli("sae", "eval", "--model", model, "--sae", fromHub, "--corpus", bad, "--quiet")
	if out.code == 0 || !strings.Contains(out.stderr, `no column "text"`) || !strings.Contains(out.stderr, "body") {
		t.Errorf("missing column: exit %d, %s", out.code, out.stderr)
	}
}
