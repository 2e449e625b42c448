package gpt2

import (
	"os"
	"testing"
)

// BenchmarkEncodeCorpus encodes all of Tiny Shakespeare (1,115,394 bytes) per
// iteration; MB/s is reported from b.SetBytes.
func BenchmarkEncodeCorpus(b *testing.B) {
	tk := tokLoadGPT2(b)
	data, err := os.ReadFile(tokCorpusPath)
	if err != nil {
		b.Fatal(err)
	}
	text := string(data)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n = len(tk.Encode(text))
	}
	b.ReportMetric(float64(n), "tokens")
}

// BenchmarkEncodePrompt is the common interactive case: one short prompt.
func BenchmarkEncodePrompt(b *testing.B) {
	tk := tokLoadGPT2(b)
	const prompt = "Michael Jordan plays the sport of"
	b.SetBytes(int64(len(prompt)))
	b.ReportAllocs()
	for b.Loop() {
		tk.Encode(prompt)
	}
}

// BenchmarkEncodeLongWord is the worst case for BPE: one 64 KiB piece.
func BenchmarkEncodeLongWord(b *testing.B) {
	tk := tokLoadGPT2(b)
	word := make([]byte, 1<<16)
	for i := range word {
		word[i] = "abcdefghijklmnopqrstuvwxyz"[(i*7+i/3)%26]
	}
	text := string(word)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		tk.Encode(text)
	}
}

func BenchmarkLoadTokenizer(b *testing.B) {
	for b.Loop() {
		if _, err := LoadTokenizer(tokGPT2Dir); err != nil {
			b.Fatal(err)
		}
	}
}
