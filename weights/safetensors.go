package weights

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"sync"
	"unicode/utf8"
	"unsafe"

	"github.com/x448/float16"
	"golang.org/x/sys/unix"
)

// The safetensors format (https://github.com/huggingface/safetensors):
//
//	8 bytes   little-endian uint64 N, the length of the header
//	N bytes   UTF-8 JSON object: {"__metadata__": {string: string},
//	          name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}
//	rest      the data section; offsets are relative to its start
//
// Every tensor is stored little-endian and row-major.

// maxHeaderBytes matches the limit of the reference implementation, so a
// corrupt length cannot make us parse hundreds of megabytes as JSON.
const maxHeaderBytes = 100_000_000

// dtypeSize knows the dtypes of the safetensors specification that occupy
// whole bytes. Listing a tensor of any of them is fine; only F32, F16 and BF16
// can be read as float32.
func dtypeSize(dtype string) (int64, bool) {
	switch dtype {
	case "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0":
		return 1, true
	case "I16", "U16", "F16", "BF16":
		return 2, true
	case "I32", "U32", "F32":
		return 4, true
	case "I64", "U64", "F64":
		return 8, true
	}
	return 0, false
}

// TensorInfo describes one tensor of a safetensors file. Begin and End are
// byte offsets into the data section (which starts after the header).
type TensorInfo struct {
	Name, DType string
	Shape       []int
	Begin, End  int64
}

// NumElements is the product of the shape (1 for a scalar).
func (t TensorInfo) NumElements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// SafetensorsFile is an open, validated safetensors file mapped read-only into
// memory. It is safe for concurrent use. Slices returned by Float32 stay valid
// until Close; touching them afterwards crashes the program.
type SafetensorsFile struct {
	path     string
	mapping  []byte // whole file as mapped; nil when parsed from a caller's buffer
	data     []byte // data section
	tensors  []TensorInfo
	byName   map[string]int
	metadata map[string]string

	mu        sync.Mutex
	closed    bool
	converted map[string][]float32 // F16/BF16 (and misaligned F32) tensors, converted once
}

// OpenSafetensors maps path read-only and validates its header completely:
// header length, JSON syntax, dtypes, shapes against byte spans, offsets
// inside the data section and not overlapping, and __metadata__ as a string
// map. No tensor data is read until Float32 asks for it.
func OpenSafetensors(path string) (*SafetensorsFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("weights: %w", err)
	}
	defer f.Close() // the mapping outlives the descriptor
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("weights: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("weights: %s: not a regular file", path)
	}
	size := st.Size()
	if size < 8 {
		return nil, fmt.Errorf("weights: %s: truncated: %d bytes, need at least 8 for the header length", path, size)
	}
	if int64(int(size)) != size {
		return nil, fmt.Errorf("weights: %s: %d bytes is too large to map", path, size)
	}
	mapping, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("weights: mmap %s: %w", path, err)
	}
	sf, err := parseSafetensors(mapping, path)
	if err != nil {
		unix.Munmap(mapping)
		return nil, err
	}
	sf.mapping = mapping
	return sf, nil
}

// parseSafetensors validates buf as a whole safetensors file and indexes it
// without copying tensor data. name only labels errors.
func parseSafetensors(buf []byte, name string) (*SafetensorsFile, error) {
	if len(buf) < 8 {
		return nil, fmt.Errorf("weights: %s: truncated: %d bytes, need at least 8 for the header length", name, len(buf))
	}
	n := binary.LittleEndian.Uint64(buf[:8])
	if n > uint64(len(buf)-8) {
		return nil, fmt.Errorf("weights: %s: header length %d beyond file size %d", name, n, len(buf))
	}
	if n > maxHeaderBytes {
		return nil, fmt.Errorf("weights: %s: header length %d exceeds the %d-byte limit", name, n, maxHeaderBytes)
	}
	header := buf[8 : 8+n]
	data := buf[8+n:]
	tensors, metadata, err := parseHeader(header, int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("weights: %s: %w", name, err)
	}
	sf := &SafetensorsFile{
		path:      name,
		data:      data,
		tensors:   tensors,
		byName:    make(map[string]int, len(tensors)),
		metadata:  metadata,
		converted: make(map[string][]float32),
	}
	for i, t := range tensors {
		sf.byName[t.Name] = i
	}
	return sf, nil
}

type headerEntry struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

// parseHeader checks the JSON header against a data section of dataLen bytes
// and returns its tensors sorted by name.
func parseHeader(header []byte, dataLen int64) ([]TensorInfo, map[string]string, error) {
	if !utf8.Valid(header) {
		return nil, nil, errors.New("header is not valid UTF-8")
	}
	trimmed := bytes.TrimLeft(header, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, nil, errors.New("header is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(header))
	if _, err := dec.Token(); err != nil {
		return nil, nil, fmt.Errorf("header is not valid JSON: %v", err)
	}
	metadata := map[string]string{}
	var tensors []TensorInfo
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("header is not valid JSON: %v", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, nil, fmt.Errorf("header is not valid JSON: unexpected %v", tok)
		}
		if seen[key] {
			return nil, nil, fmt.Errorf("header: %q appears twice", key)
		}
		seen[key] = true
		if key == "__metadata__" {
			var m map[string]string
			if err := dec.Decode(&m); err != nil {
				return nil, nil, fmt.Errorf("header: __metadata__ must map strings to strings: %v", err)
			}
			for k, v := range m {
				metadata[k] = v
			}
			continue
		}
		var e headerEntry
		if err := dec.Decode(&e); err != nil {
			return nil, nil, fmt.Errorf("header: tensor %q: %v", key, err)
		}
		t, err := checkEntry(key, e, dataLen)
		if err != nil {
			return nil, nil, fmt.Errorf("header: tensor %q: %w", key, err)
		}
		tensors = append(tensors, t)
	}
	if _, err := dec.Token(); err != nil { // closing brace
		return nil, nil, fmt.Errorf("header is not valid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, errors.New("header has trailing data after the JSON object")
	}
	if err := checkOverlaps(tensors); err != nil {
		return nil, nil, fmt.Errorf("header: %w", err)
	}
	sort.Slice(tensors, func(i, j int) bool { return tensors[i].Name < tensors[j].Name })
	return tensors, metadata, nil
}

func checkEntry(name string, e headerEntry, dataLen int64) (TensorInfo, error) {
	if e.DType == nil || e.Shape == nil || e.DataOffsets == nil {
		return TensorInfo{}, errors.New("needs dtype, shape and data_offsets")
	}
	size, ok := dtypeSize(*e.DType)
	if !ok {
		return TensorInfo{}, fmt.Errorf("unknown dtype %q", *e.DType)
	}
	elems := int64(1)
	shape := make([]int, len(*e.Shape))
	for i, d := range *e.Shape {
		if d < 0 || int64(int(d)) != d {
			return TensorInfo{}, fmt.Errorf("bad dimension %d in shape %v", d, *e.Shape)
		}
		if d != 0 && elems > math.MaxInt64/d {
			return TensorInfo{}, fmt.Errorf("shape %v overflows", *e.Shape)
		}
		elems *= d
		shape[i] = int(d)
	}
	if elems > math.MaxInt64/size || int64(int(elems)) != elems {
		return TensorInfo{}, fmt.Errorf("shape %v overflows", *e.Shape)
	}
	off := *e.DataOffsets
	if len(off) != 2 {
		return TensorInfo{}, fmt.Errorf("data_offsets must have 2 entries, has %d", len(off))
	}
	begin, end := off[0], off[1]
	if begin < 0 || end < begin {
		return TensorInfo{}, fmt.Errorf("bad data_offsets [%d %d]", begin, end)
	}
	if end > dataLen {
		return TensorInfo{}, fmt.Errorf("data_offsets [%d %d] beyond the %d-byte data section", begin, end, dataLen)
	}
	if end-begin != elems*size {
		return TensorInfo{}, fmt.Errorf("shape %v of %s needs %d bytes, data_offsets [%d %d] span %d",
			*e.Shape, *e.DType, elems*size, begin, end, end-begin)
	}
	return TensorInfo{Name: name, DType: *e.DType, Shape: shape, Begin: begin, End: end}, nil
}

// checkOverlaps allows any storage order and gaps, but no shared bytes.
func checkOverlaps(tensors []TensorInfo) error {
	spans := make([]TensorInfo, 0, len(tensors))
	for _, t := range tensors {
		if t.End > t.Begin {
			spans = append(spans, t)
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].Begin < spans[j].Begin })
	for i := 1; i < len(spans); i++ {
		if spans[i].Begin < spans[i-1].End {
			return fmt.Errorf("tensors %q [%d %d] and %q [%d %d] overlap",
				spans[i-1].Name, spans[i-1].Begin, spans[i-1].End, spans[i].Name, spans[i].Begin, spans[i].End)
		}
	}
	return nil
}

// Path is the file this was opened from.
func (f *SafetensorsFile) Path() string { return f.path }

// Tensors lists every tensor of the file, of any dtype, sorted by name.
func (f *SafetensorsFile) Tensors() []TensorInfo {
	out := make([]TensorInfo, len(f.tensors))
	copy(out, f.tensors)
	return out
}

// Info describes one tensor.
func (f *SafetensorsFile) Info(name string) (TensorInfo, bool) {
	i, ok := f.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.tensors[i], true
}

// Metadata is a copy of the header's __metadata__ map (empty if absent).
func (f *SafetensorsFile) Metadata() map[string]string {
	out := make(map[string]string, len(f.metadata))
	for k, v := range f.metadata {
		out[k] = v
	}
	return out
}

// Float32 returns the tensor's elements. An F32 tensor is a read-only view of
// the mapping (no copy) — never write to it; F16 and BF16 tensors are
// converted once and the result is kept. Other dtypes are an error.
func (f *SafetensorsFile) Float32(name string) ([]float32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, fmt.Errorf("weights: %s: %s: file is closed", f.path, name)
	}
	i, ok := f.byName[name]
	if !ok {
		return nil, fmt.Errorf("weights: %s: no tensor %q", f.path, name)
	}
	if out, ok := f.converted[name]; ok {
		return out, nil
	}
	t := f.tensors[i]
	raw := f.data[t.Begin:t.End]
	n := t.NumElements()
	switch t.DType {
	case "F32":
		if v, ok := float32View(raw, n); ok {
			return v, nil
		}
		// The data is misaligned (a writer that did not pad its header to a
		// multiple of 4) or the host is big-endian: decode a copy instead.
		out := make([]float32, n)
		for j := range out {
			out[j] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*j:]))
		}
		f.converted[name] = out
		return out, nil
	case "F16":
		out := make([]float32, n)
		for j := range out {
			out[j] = float16.Frombits(binary.LittleEndian.Uint16(raw[2*j:])).Float32()
		}
		f.converted[name] = out
		return out, nil
	case "BF16":
		out := make([]float32, n)
		for j := range out {
			out[j] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[2*j:])) << 16)
		}
		f.converted[name] = out
		return out, nil
	default:
		return nil, fmt.Errorf("weights: %s: tensor %q has dtype %s, only F32, F16 and BF16 can be read as float32", f.path, name, t.DType)
	}
}

// Close unmaps the file. Slices returned by Float32 for F32 tensors must not
// be used afterwards.
func (f *SafetensorsFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	f.converted = nil
	f.data = nil
	if f.mapping == nil {
		return nil
	}
	m := f.mapping
	f.mapping = nil
	if err := unix.Munmap(m); err != nil {
		return fmt.Errorf("weights: munmap %s: %w", f.path, err)
	}
	return nil
}

// hostLittleEndian reports whether float32 values in memory have the byte
// order of safetensors files, which is what makes zero-copy views possible.
func hostLittleEndian() bool {
	return binary.NativeEndian.Uint16([]byte{1, 0}) == 1
}

// float32View reinterprets raw as n float32 values without copying when the
// host is little-endian and raw is 4-byte aligned.
func float32View(raw []byte, n int) ([]float32, bool) {
	if n == 0 {
		return []float32{}, true
	}
	if !hostLittleEndian() || uintptr(unsafe.Pointer(&raw[0]))%4 != 0 {
		return nil, false
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&raw[0])), n), true
}
