package weights

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

// goldenExpected mirrors testdata/golden/expected.json, written by
// testdata/make_safetensors_golden.py.
type goldenExpected map[string]json.RawMessage

type goldenFile struct {
	Metadata map[string]string `json:"metadata"`
	Tensors  map[string]struct {
		DType       string   `json:"dtype"`
		Shape       []int    `json:"shape"`
		DataOffsets []int64  `json:"data_offsets"`
		F32Bits     []uint32 `json:"f32_bits"` // null for dtypes that are not float32-readable
	} `json:"tensors"`
}

func readGolden(t *testing.T) goldenExpected {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "golden", "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g goldenExpected
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

// sameFloatBits compares bit patterns, except that any NaN matches any NaN:
// numpy keeps a signalling F16 NaN's payload where x448/float16 quiets it.
func sameFloatBits(got float32, want uint32) bool {
	w := math.Float32frombits(want)
	if w != w {
		return got != got
	}
	return math.Float32bits(got) == want
}

func TestReadPythonGoldens(t *testing.T) {
	g := readGolden(t)
	for _, name := range []string{"f32.safetensors", "f16.safetensors", "bf16.safetensors",
		"out_of_order.safetensors", "misaligned.safetensors", "mixed_dtypes.safetensors"} {
		t.Run(name, func(t *testing.T) {
			var want goldenFile
			if err := json.Unmarshal(g[name], &want); err != nil {
				t.Fatal(err)
			}
			f, err := OpenSafetensors(filepath.Join("testdata", "golden", name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if !reflect.DeepEqual(f.Metadata(), want.Metadata) {
				t.Errorf("metadata %v, want %v", f.Metadata(), want.Metadata)
			}
			infos := f.Tensors()
			if len(infos) != len(want.Tensors) {
				t.Fatalf("%d tensors, want %d", len(infos), len(want.Tensors))
			}
			for i, info := range infos {
				if i > 0 && infos[i-1].Name >= info.Name {
					t.Errorf("Tensors not sorted by name: %q before %q", infos[i-1].Name, info.Name)
				}
				w, ok := want.Tensors[info.Name]
				if !ok {
					t.Fatalf("unexpected tensor %q", info.Name)
				}
				if info.DType != w.DType || !sameShape(info.Shape, w.Shape) || info.Begin != w.DataOffsets[0] || info.End != w.DataOffsets[1] {
					t.Errorf("%s: %+v, want dtype %s shape %v offsets %v", info.Name, info, w.DType, w.Shape, w.DataOffsets)
				}
				got, err := f.Float32(info.Name)
				if w.F32Bits == nil {
					if err == nil || !strings.Contains(err.Error(), info.Name) || !strings.Contains(err.Error(), info.DType) {
						t.Errorf("%s (%s): error %v, want one naming the tensor and dtype", info.Name, info.DType, err)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(w.F32Bits) {
					t.Fatalf("%s: %d values, want %d", info.Name, len(got), len(w.F32Bits))
				}
				for j := range got {
					if !sameFloatBits(got[j], w.F32Bits[j]) {
						t.Errorf("%s[%d] = %v (%#08x), want %v (%#08x)", info.Name, j, got[j], math.Float32bits(got[j]),
							math.Float32frombits(w.F32Bits[j]), w.F32Bits[j])
					}
				}
			}
		})
	}
}

// inMapping reports whether v points into f's mapping, i.e. was not copied.
func inMapping(f *SafetensorsFile, v []float32) bool {
	if len(v) == 0 || len(f.mapping) == 0 {
		return false
	}
	p := uintptr(unsafe.Pointer(&v[0]))
	lo := uintptr(unsafe.Pointer(&f.mapping[0]))
	return p >= lo && p < lo+uintptr(len(f.mapping))
}

func TestFloat32ZeroCopy(t *testing.T) {
	open := func(name string) *SafetensorsFile {
		f, err := OpenSafetensors(filepath.Join("testdata", "golden", name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	f := open("f32.safetensors")
	a, _ := f.Float32("a")
	if !inMapping(f, a) {
		t.Error("aligned F32 tensor was copied")
	}
	a2, _ := f.Float32("a")
	if &a[0] != &a2[0] {
		t.Error("two calls gave different slices")
	}
	m := open("misaligned.safetensors")
	v, _ := m.Float32("m")
	if inMapping(m, v) {
		t.Error("misaligned F32 tensor is a view; want a copy")
	}
	h := open("f16.safetensors")
	x1, _ := h.Float32("x")
	x2, _ := h.Float32("x")
	if &x1[0] != &x2[0] {
		t.Error("F16 tensor converted twice")
	}
}

func TestFloat32Errors(t *testing.T) {
	f, err := OpenSafetensors(filepath.Join("testdata", "golden", "mixed_dtypes.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Float32("nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("unknown name: %v", err)
	}
	if _, err := f.Float32("ids"); err == nil || !strings.Contains(err.Error(), `"ids" has dtype I64`) {
		t.Errorf("I64: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := f.Float32("w"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("after Close: %v", err)
	}
}

// rawFile assembles a safetensors file from a header string and data bytes.
func rawFile(header string, data []byte) []byte {
	b := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func TestOpenSafetensorsBadFiles(t *testing.T) {
	data16 := make([]byte, 16)
	tooLong := make([]byte, 8)
	binary.LittleEndian.PutUint64(tooLong, 1000)
	tooLong = append(tooLong, `{}`...)
	huge := make([]byte, 8)
	binary.LittleEndian.PutUint64(huge, math.MaxUint64)
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"empty", nil, "truncated: 0 bytes"},
		{"truncated length", []byte{1, 2, 3}, "truncated: 3 bytes"},
		{"header length beyond file", tooLong, "header length 1000 beyond file size 10"},
		{"header length overflows", huge, "beyond file size 8"},
		{"not json", rawFile(`hello`, nil), "not a JSON object"},
		{"json array", rawFile(`[1,2]`, nil), "not a JSON object"},
		{"broken json", rawFile(`{"a":{"dtype":"F32",`, nil), "tensor \"a\""},
		{"trailing data", rawFile(`{} {}`, nil), "trailing data"},
		{"invalid utf-8", rawFile("{\"\xff\":1}", nil), "UTF-8"},
		{"duplicate name", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, data16), `"a" appears twice`},
		{"overlapping offsets", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, data16), `"a" [0 8] and "b" [4 12] overlap`},
		{"shape offset mismatch", rawFile(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, data16), "shape [3] of F32 needs 12 bytes, data_offsets [0 8] span 8"},
		{"offsets beyond data", rawFile(`{"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}`, data16), "beyond the 16-byte data section"},
		{"begin after end", rawFile(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}`, data16), "bad data_offsets [8 4]"},
		{"three offsets", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, data16), "2 entries"},
		{"unknown dtype", rawFile(`{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}`, data16), `unknown dtype "F128"`},
		{"missing data_offsets", rawFile(`{"a":{"dtype":"F32","shape":[1]}}`, data16), "needs dtype, shape and data_offsets"},
		{"negative dimension", rawFile(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, data16), "bad dimension -1"},
		{"fractional dimension", rawFile(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, data16), `tensor "a"`},
		{"shape overflow", rawFile(`{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`, data16), "overflows"},
		{"metadata not strings", rawFile(`{"__metadata__":{"n":1}}`, nil), "__metadata__ must map strings to strings"},
		{"entry not object", rawFile(`{"a":[1]}`, nil), `tensor "a"`},
	}
	dir := t.TempDir()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".safetensors")
			if err := os.WriteFile(path, tc.file, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := OpenSafetensors(path)
			if err == nil {
				f.Close()
				t.Fatalf("no error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q, want it to name the file and contain %q", err, tc.want)
			}
		})
	}
}

func TestOpenSafetensorsTruncatedRealFile(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "golden", "out_of_order.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cut.safetensors")
	if err := os.WriteFile(path, src[:len(src)-3], 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = OpenSafetensors(path)
	if err == nil || !strings.Contains(err.Error(), "beyond the") {
		t.Errorf("error %v, want offsets beyond the data section", err)
	}
}

func TestWriteSafetensorsRoundTrip(t *testing.T) {
	vals := []float32{0, 1, -2.5, 3.140625, 1e-3, -65504, float32(math.Inf(1))}
	tensors := []Tensor{
		{Name: "b.second", Shape: []int{7}, Data: vals},
		{Name: "a.first", Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}},
		{Name: "scalar", Shape: []int{}, Data: []float32{42}},
		{Name: "empty", Shape: []int{0, 5}, Data: nil},
	}
	meta := map[string]string{"format": "pt", "k": "v"}
	for _, tc := range []struct {
		dtype   string
		opts    []WriteOption
		relTol  float64
		shuffle bool
	}{
		{"F32", nil, 0, false},
		{"F32", []WriteOption{WithShuffledData(7)}, 0, true},
		{"F16", []WriteOption{WithDType("F16")}, 1.0 / 2048, false},
		{"BF16", []WriteOption{WithDType("BF16"), WithShuffledData(3)}, 1.0 / 256, true},
	} {
		t.Run(tc.dtype, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.safetensors")
			if err := WriteSafetensors(path, tensors, meta, tc.opts...); err != nil {
				t.Fatal(err)
			}
			raw, _ := os.ReadFile(path)
			if n := binary.LittleEndian.Uint64(raw); (8+n)%8 != 0 {
				t.Errorf("header length %d not padded to 8", n)
			}
			f, err := OpenSafetensors(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if !reflect.DeepEqual(f.Metadata(), meta) {
				t.Errorf("metadata %v", f.Metadata())
			}
			inOrder := true
			for i, want := range tensors {
				info, ok := f.Info(want.Name)
				if !ok || info.DType != tc.dtype || !sameShape(info.Shape, want.Shape) {
					t.Fatalf("%s: %+v", want.Name, info)
				}
				if i > 0 {
					prev, _ := f.Info(tensors[i-1].Name)
					if info.End > info.Begin && prev.End > info.Begin {
						inOrder = false
					}
				}
				got, err := f.Float32(want.Name)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(want.Data) {
					t.Fatalf("%s: %d values", want.Name, len(got))
				}
				for j := range got {
					w := float64(want.Data[j])
					if d := math.Abs(float64(got[j]) - w); !(d <= tc.relTol*math.Abs(w)) && !(math.IsInf(w, 0) && got[j] == want.Data[j]) {
						t.Errorf("%s[%d] = %v, want %v", want.Name, j, got[j], w)
					}
				}
			}
			if tc.shuffle == inOrder {
				t.Errorf("data stored in header order = %v, shuffled option = %v", inOrder, tc.shuffle)
			}
		})
	}
}

func TestWriteSafetensorsRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		tensors []Tensor
		opts    []WriteOption
		want    string
	}{
		{"data length", []Tensor{{Name: "a", Shape: []int{2, 2}, Data: make([]float32, 3)}}, nil, "a: shape [2 2] holds 4 elements, data has 3"},
		{"negative dim", []Tensor{{Name: "a", Shape: []int{-1}, Data: nil}}, nil, "negative dimension"},
		{"duplicate", []Tensor{{Name: "a", Shape: []int{1}, Data: []float32{1}}, {Name: "a", Shape: []int{1}, Data: []float32{1}}}, nil, `"a" given twice`},
		{"empty name", []Tensor{{Name: "", Shape: []int{1}, Data: []float32{1}}}, nil, "empty tensor name"},
		{"metadata name", []Tensor{{Name: "__metadata__", Shape: []int{1}, Data: []float32{1}}}, nil, "not a tensor name"},
		{"dtype", []Tensor{{Name: "a", Shape: []int{1}, Data: []float32{1}}}, []WriteOption{WithDType("F64")}, `dtype "F64"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "out.safetensors")
			err := WriteSafetensors(path, tc.tensors, nil, tc.opts...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("file written despite the error")
			}
		})
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left files behind: %v", ents)
	}
}

func TestFloat32ToBF16(t *testing.T) {
	for _, tc := range []struct {
		in   uint32
		want uint16
	}{
		{0x3f800000, 0x3f80}, // 1
		{0x3f808000, 0x3f80}, // tie, even stays
		{0x3f818000, 0x3f82}, // tie, odd rounds up
		{0x3f80c000, 0x3f81}, // above half
		{0x7f7fffff, 0x7f80}, // max float32 rounds to +Inf, as in PyTorch
		{0xff800000, 0xff80}, // -Inf
		{0x7fc00001, 0x7fc0}, // NaN
		{0x80000000, 0x8000}, // -0
	} {
		if got := float32ToBF16(math.Float32frombits(tc.in)); got != tc.want {
			t.Errorf("float32ToBF16(%#08x) = %#04x, want %#04x", tc.in, got, tc.want)
		}
	}
}
