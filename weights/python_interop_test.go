package weights

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// TestGoWriterForPython writes files for testdata/make_safetensors_golden.py
// to read back with its own parser; it only runs when that script sets
// FACTLENS_GO_WRITER_DIR (see the script for the command).
func TestGoWriterForPython(t *testing.T) {
	dir := os.Getenv("FACTLENS_GO_WRITER_DIR")
	if dir == "" {
		t.Skip("run by testdata/make_safetensors_golden.py")
	}
	b, err := os.ReadFile(filepath.Join("testdata", "golden", "writer_input.json"))
	if err != nil {
		t.Fatal(err)
	}
	var in struct {
		Metadata map[string]string `json:"metadata"`
		Tensors  []struct {
			Name    string   `json:"name"`
			Shape   []int    `json:"shape"`
			F32Bits []uint32 `json:"f32_bits"`
		} `json:"tensors"`
	}
	if err := json.Unmarshal(b, &in); err != nil {
		t.Fatal(err)
	}
	var tensors []Tensor
	for _, x := range in.Tensors {
		data := make([]float32, len(x.F32Bits))
		for i, u := range x.F32Bits {
			data[i] = math.Float32frombits(u)
		}
		tensors = append(tensors, Tensor{Name: x.Name, Shape: x.Shape, Data: data})
	}
	for name, opts := range map[string][]WriteOption{
		"F32":          nil,
		"F16":          {WithDType("F16")},
		"BF16":         {WithDType("BF16")},
		"F32-shuffled": {WithShuffledData(11)},
	} {
		if err := WriteSafetensors(filepath.Join(dir, "go_"+name+".safetensors"), tensors, in.Metadata, opts...); err != nil {
			t.Fatal(err)
		}
	}

	c, err := OpenCheckpoint(filepath.Join("testdata", "golden", "tiny-gpt2-openai"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = SaveCheckpoint(filepath.Join(dir, "ckpt"), c.Config, c.Tensors(), SaveOptions{
		Prefix: true, LMHead: true, AttnBiasBuffers: true, DType: "BF16", ShardBytes: 256, ShuffleOrder: true,
	})
	if err != nil {
		t.Fatal(err)
	}
}
