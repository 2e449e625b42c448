package weights

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"github.com/x448/float16"
)

// Tensor is a named float32 tensor to be written. Data is row-major and must
// hold exactly the product of Shape elements.
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// WriteOption changes how WriteSafetensors stores tensors.
type WriteOption func(*writeSettings)

type writeSettings struct {
	dtype       string
	shuffle     bool
	shuffleSeed uint64
}

// WithDType stores every tensor as "F32" (the default), "F16" or "BF16".
// Both 16-bit formats round to nearest, ties to even, as PyTorch does.
func WithDType(dtype string) WriteOption {
	return func(s *writeSettings) { s.dtype = dtype }
}

// WithShuffledData stores the data section in a seeded pseudo-random order
// instead of header order. Readers must follow data_offsets; this exists to
// prove that ours does.
func WithShuffledData(seed uint64) WriteOption {
	return func(s *writeSettings) { s.shuffle, s.shuffleSeed = true, seed }
}

// WriteSafetensors writes tensors to path in the safetensors format, the
// header listing them in the order given and padded with spaces to a multiple
// of 8 bytes (as Hugging Face's writer does) so that every F32 tensor is
// 4-byte aligned in a mapping. The file appears atomically: it is written to a
// temporary file in the same folder, synced, then renamed.
func WriteSafetensors(path string, tensors []Tensor, metadata map[string]string, opts ...WriteOption) error {
	s := writeSettings{dtype: "F32"}
	for _, o := range opts {
		o(&s)
	}
	entries := make([]rawEntry, len(tensors))
	for i, t := range tensors {
		e, err := floatEntry(t, s.dtype)
		if err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
		entries[i] = e
	}
	var order []int
	if s.shuffle {
		order = shuffledOrder(len(entries), s.shuffleSeed)
	}
	return writeEntries(path, entries, metadata, order)
}

// rawEntry is one tensor as the writer sees it: header fields plus a function
// that emits exactly nbytes of little-endian data.
type rawEntry struct {
	name, dtype string
	shape       []int
	nbytes      int64
	write       func(w io.Writer) error
}

func floatEntry(t Tensor, dtype string) (rawEntry, error) {
	n := 1
	for _, d := range t.Shape {
		if d < 0 {
			return rawEntry{}, fmt.Errorf("%s: negative dimension in shape %v", t.Name, t.Shape)
		}
		n *= d
	}
	if n != len(t.Data) {
		return rawEntry{}, fmt.Errorf("%s: shape %v holds %d elements, data has %d", t.Name, t.Shape, n, len(t.Data))
	}
	data := t.Data
	e := rawEntry{name: t.Name, dtype: dtype, shape: t.Shape}
	switch dtype {
	case "F32":
		e.nbytes = 4 * int64(n)
		e.write = func(w io.Writer) error { return writeF32(w, data) }
	case "F16":
		e.nbytes = 2 * int64(n)
		e.write = func(w io.Writer) error {
			return writeU16(w, data, func(f float32) uint16 { return float16.Fromfloat32(f).Bits() })
		}
	case "BF16":
		e.nbytes = 2 * int64(n)
		e.write = func(w io.Writer) error { return writeU16(w, data, float32ToBF16) }
	default:
		return rawEntry{}, fmt.Errorf("dtype %q: only F32, F16 and BF16 can be written", dtype)
	}
	return e, nil
}

// float32ToBF16 rounds to nearest, ties to even, exactly like PyTorch's
// round_to_nearest_even; NaN becomes the canonical quiet NaN.
func float32ToBF16(f float32) uint16 {
	if f != f {
		return 0x7fc0
	}
	b := math.Float32bits(f)
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

func writeF32(w io.Writer, data []float32) error {
	if len(data) == 0 {
		return nil
	}
	if hostLittleEndian() {
		_, err := w.Write(unsafe.Slice((*byte)(unsafe.Pointer(&data[0])), 4*len(data)))
		return err
	}
	buf := make([]byte, 0, 1<<16)
	for i, v := range data {
		buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		if len(buf) == cap(buf) || i == len(data)-1 {
			if _, err := w.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	return nil
}

func writeU16(w io.Writer, data []float32, conv func(float32) uint16) error {
	buf := make([]byte, 0, 1<<16)
	for i, v := range data {
		buf = binary.LittleEndian.AppendUint16(buf, conv(v))
		if len(buf) == cap(buf) || i == len(data)-1 {
			if _, err := w.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	return nil
}

func shuffledOrder(n int, seed uint64) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	r := rand.New(rand.NewPCG(seed, 0x5afe7e2503))
	r.Shuffle(n, func(i, j int) { order[i], order[j] = order[j], order[i] })
	return order
}

// writeEntries lays out the header in entry order and the data in dataOrder
// (a permutation of entry indexes; nil means entry order).
func writeEntries(path string, entries []rawEntry, metadata map[string]string, dataOrder []int) error {
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		switch {
		case e.name == "":
			return fmt.Errorf("weights: write %s: empty tensor name", path)
		case e.name == "__metadata__":
			return fmt.Errorf("weights: write %s: __metadata__ is not a tensor name", path)
		case seen[e.name]:
			return fmt.Errorf("weights: write %s: tensor %q given twice", path, e.name)
		}
		seen[e.name] = true
	}
	if dataOrder == nil {
		dataOrder = make([]int, len(entries))
		for i := range dataOrder {
			dataOrder[i] = i
		}
	}
	if len(dataOrder) != len(entries) {
		return fmt.Errorf("weights: write %s: data order has %d entries for %d tensors", path, len(dataOrder), len(entries))
	}
	begins := make([]int64, len(entries))
	var off int64
	for _, i := range dataOrder {
		begins[i] = off
		off += entries[i].nbytes
	}
	header, err := encodeHeader(entries, begins, metadata)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return WriteFileAtomic(path, func(w io.Writer) error {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(header)))
		if _, err := w.Write(n[:]); err != nil {
			return err
		}
		if _, err := w.Write(header); err != nil {
			return err
		}
		for _, i := range dataOrder {
			cw := &countingWriter{w: w}
			if err := entries[i].write(cw); err != nil {
				return err
			}
			if cw.n != entries[i].nbytes {
				return fmt.Errorf("tensor %s: wrote %d bytes, header says %d", entries[i].name, cw.n, entries[i].nbytes)
			}
		}
		return nil
	})
}

func encodeHeader(entries []rawEntry, begins []int64, metadata map[string]string) ([]byte, error) {
	var b strings.Builder
	b.WriteByte('{')
	if len(metadata) > 0 {
		m, err := json.Marshal(metadata) // keys sorted
		if err != nil {
			return nil, err
		}
		b.WriteString(`"__metadata__":`)
		b.Write(m)
	}
	for i, e := range entries {
		if i > 0 || len(metadata) > 0 {
			b.WriteByte(',')
		}
		name, err := json.Marshal(e.name)
		if err != nil {
			return nil, err
		}
		shape := e.shape
		if shape == nil {
			shape = []int{}
		}
		s, _ := json.Marshal(shape)
		fmt.Fprintf(&b, `%s:{"dtype":%q,"shape":%s,"data_offsets":[%d,%d]}`, name, e.dtype, s, begins[i], begins[i]+e.nbytes)
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	return []byte(b.String()), nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// WriteFileAtomic writes path through a temporary file in the same folder,
// synced and renamed into place, so that readers (and a crash or Ctrl-C
// half-way) see either the old file or the complete new one. Every package
// of factlens writes its files through it.
func WriteFileAtomic(path string, write func(w io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err := write(bw); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// WriteFileBytesAtomic is WriteFileAtomic for data already in memory.
func WriteFileBytesAtomic(path string, data []byte) error {
	return WriteFileAtomic(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}
