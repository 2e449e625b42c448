package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func runJSON(t *testing.T, args ...string) runResult {
	t.Helper()
	out := factlens(t, "", args...)
	if out.code != 0 {
		t.Fatalf("factlens %q: exit %d: %s", args, out.code, out.stderr)
	}
	var res runResult
	if err := json.Unmarshal([]byte(out.stdout), &res); err != nil {
		t.Fatalf("%v\n%s", err, out.stdout)
	}
	return res
}

func TestRunGenerate(t *testing.T) {
	dir := tinyCheckpoint(t)
	const prompt = "Michael Jordan plays the sport of"
	base := []string{"run", "--model", dir, "--format", "json", "--generate", "5"}

	greedy := runJSON(t, append(base, prompt)...)
	if len(greedy.GeneratedIDs) != 5 || len(greedy.GeneratedTokens) != 5 {
		t.Fatalf("greedy: %d ids, %d tokens, want 5", len(greedy.GeneratedIDs), len(greedy.GeneratedTokens))
	}
	if greedy.GeneratedIDs[0] != greedy.Top[0].ID {
		t.Errorf("first greedy token %d is not the top prediction %d", greedy.GeneratedIDs[0], greedy.Top[0].ID)
	}
	if greedy.GeneratedText != strings.Join(greedy.GeneratedTokens, "") {
		t.Errorf("generated_text %q does not spell generated_tokens %q", greedy.GeneratedText, greedy.GeneratedTokens)
	}
	if g := greedy.Generation; g == nil || g.MaxNewTokens != 5 || g.Temperature != 0 || len(g.Probs) != 5 || !g.StopAtEOT {
		t.Errorf("generation %+v", g)
	}
	if !slices.Equal(greedy.IDs, []int{13256, 8078, 5341, 262, 6332, 286}) {
		t.Errorf("prompt ids %v", greedy.IDs)
	}

	// Greedy step by step: each generated token is the top prediction after
	// the prompt plus the tokens before it.
	text := prompt
	for i, id := range greedy.GeneratedIDs[:3] {
		next := runJSON(t, "run", "--model", dir, "--format", "json", text)
		if next.Top[0].ID != id {
			t.Errorf("token %d: generated %d, run on the text so far predicts %d", i, id, next.Top[0].ID)
		}
		text += greedy.GeneratedTokens[i]
	}

	sampled := append(base, "--temperature", "1", "--top-k-sample", "50", "--top-p", "0.9", "--seed", "3", prompt)
	a, b := runJSON(t, sampled...), runJSON(t, sampled...)
	if len(a.GeneratedIDs) != 5 || !slices.Equal(a.GeneratedIDs, b.GeneratedIDs) || a.GeneratedText != b.GeneratedText {
		t.Errorf("same seed: %v and %v", a.GeneratedIDs, b.GeneratedIDs)
	}
	other := runJSON(t, append(base, "--temperature", "1", "--seed", "4", prompt)...)
	if slices.Equal(other.GeneratedIDs, a.GeneratedIDs) {
		t.Errorf("seeds 3 and 4 (and different filters) gave the same ids %v", a.GeneratedIDs)
	}

	bos := runJSON(t, append(base, "--prepend-bos", "--processing", "tl", prompt)...)
	if len(bos.GeneratedIDs) != 5 || bos.IDs[0] != 50256 {
		t.Errorf("--prepend-bos: ids %v, generated %v", bos.IDs, bos.GeneratedIDs)
	}

	for _, format := range []string{"text", "md", "html"} {
		out := factlens(t, "", "run", "--model", dir, "--format", format, "--generate", "5", prompt)
		if out.code != 0 {
			t.Fatalf("%s: exit %d: %s", format, out.code, out.stderr)
		}
		for _, want := range []string{"Continuation", "Generated tokens", "greedy", strings.Trim(strings.Fields(joinInts(greedy.GeneratedIDs))[0], " ")} {
			if !strings.Contains(out.stdout, want) {
				t.Errorf("%s output lacks %q:\n%s", format, want, out.stdout)
			}
		}
	}

	// Without --generate the JSON has no generation fields.
	plain := factlens(t, "", "run", "--model", dir, "--format", "json", prompt)
	if strings.Contains(plain.stdout, "generated") {
		t.Errorf("run without --generate prints generation fields:\n%s", plain.stdout)
	}
}

func TestRunGenerateErrors(t *testing.T) {
	dir := tinyCheckpoint(t)
	tests := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"temperature without generate", []string{"--temperature", "1"}, 1, "--temperature needs --generate"},
		{"seed without generate", []string{"--seed", "1"}, 1, "--seed needs --generate"},
		{"negative generate", []string{"--generate", "-1"}, 1, "--generate must be at least 1"},
		{"negative temperature", []string{"--generate", "2", "--temperature", "-1"}, 1, "--temperature"},
		{"top-k without temperature", []string{"--generate", "2", "--top-k-sample", "5"}, 1, "add --temperature"},
		{"top-p without temperature", []string{"--generate", "2", "--top-p", "0.9"}, 1, "add --temperature"},
		{"seed without temperature", []string{"--generate", "2", "--seed", "3"}, 1, "add --temperature"},
		{"top-p above 1", []string{"--generate", "2", "--temperature", "1", "--top-p", "2"}, 1, "--top-p"},
		{"negative top-k", []string{"--generate", "2", "--temperature", "1", "--top-k-sample", "-3"}, 1, "--top-k-sample"},
		// 6 prompt tokens + 27 new > n_positions 32.
		{"past the context", []string{"--generate", "27"}, 2, "prompt is 6 tokens long; with --generate 27 that is 33 positions, but " + dir + " takes at most 32"},
		{"BOS counts", []string{"--generate", "26", "--prepend-bos"}, 2, "prompt is 7 tokens long; with --generate 26 that is 33 positions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"run", "--model", dir}, tt.args...)
			out := factlens(t, "", append(args, "Michael Jordan plays the sport of")...)
			if out.code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", out.code, tt.code, out.stderr)
			}
			if !strings.Contains(out.stderr, tt.contains) {
				t.Errorf("stderr lacks %q:\n%s", tt.contains, out.stderr)
			}
		})
	}
	// Exactly filling the context is fine.
	if res := runJSON(t, "run", "--model", dir, "--format", "json", "--generate", "26", "--stop-at-eot=false", "Michael Jordan plays the sport of"); len(res.GeneratedIDs) != 26 {
		t.Errorf("6 + 26 positions: %d ids", len(res.GeneratedIDs))
	}
}
