package sae

import (
	"runtime"
	"sync"

	"github.com/factlens/factlens/gpt2/kernels"
)

// parallelRows splits [0, n) into one contiguous chunk per available core and
// runs fn on each concurrently.
func parallelRows(n int, fn func(lo, hi int)) {
	workers := runtime.GOMAXPROCS(0)
	if workers > n {
		workers = n
	}
	if workers <= 1 {
		if n > 0 {
			fn(0, n)
		}
		return
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

// matMul computes c[m×n] = a[m×k]·b[k×n]; the kernels split the work across
// cores themselves.
func matMul(c, a, b []float32, m, k, n int) {
	kernels.MatMul(c, a, b, m, k, n, false)
}

// decodeDense computes out[n×dIn] = acts[n×dSAE]·wDec + bDec, skipping zero
// activations (SAE activations are sparse, so this is far cheaper than a
// dense product).
func decodeDense(out, acts, wDec, bDec []float32, n, dSAE, dIn int) {
	parallelRows(n, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			o := out[r*dIn : (r+1)*dIn]
			copy(o, bDec)
			for j, a := range acts[r*dSAE : (r+1)*dSAE] {
				if a != 0 {
					kernels.Axpy(a, wDec[j*dIn:(j+1)*dIn], o)
				}
			}
		}
	})
}

// csr is a sparse [rows × cols] matrix by rows.
type csr struct {
	rows, cols int
	ptr        []int32 // rows+1 offsets into idx/val
	idx        []int32
	val        []float32
}

func (m *csr) reset(rows, cols int) {
	m.rows, m.cols = rows, cols
	if cap(m.ptr) < rows+1 {
		m.ptr = make([]int32, rows+1)
	}
	m.ptr = m.ptr[:rows+1]
	clear(m.ptr)
	m.idx = m.idx[:0]
	m.val = m.val[:0]
}

func (m *csr) nnz() int { return len(m.idx) }

// transpose writes mᵀ into t (a CSR of m's columns), in row order within each
// column.
func (m *csr) transpose(t *csr) {
	t.reset(m.cols, m.rows)
	counts := t.ptr[1:]
	clear(counts)
	for _, j := range m.idx {
		counts[j]++
	}
	for j := 1; j < len(counts); j++ {
		counts[j] += counts[j-1]
	}
	n := m.nnz()
	if cap(t.idx) < n {
		t.idx = make([]int32, n)
		t.val = make([]float32, n)
	}
	t.idx, t.val = t.idx[:n], t.val[:n]
	// Fill from the back so that rows come out ascending within a column.
	for r := m.rows - 1; r >= 0; r-- {
		for p := m.ptr[r+1] - 1; p >= m.ptr[r]; p-- {
			j := m.idx[p]
			counts[j]--
			q := counts[j]
			t.idx[q] = int32(r)
			t.val[q] = m.val[p]
		}
	}
	// counts now holds each column's start; shift into ptr form.
	copy(t.ptr[:m.cols], counts)
	t.ptr[m.cols] = int32(n)
}

// topKHeap selects the k largest entries of a row with a min-heap.
type topKHeap struct {
	idx []int32
	val []float32
}

// selectTop fills h.idx with the indices of the k largest values of row
// (restricted to allowed when it is non-nil), in no particular order. Ties
// go to the lower index.
func (h *topKHeap) selectTop(row []float32, k int, allowed []int32) {
	h.idx = h.idx[:0]
	h.val = h.val[:0]
	if k <= 0 {
		return
	}
	push := func(j int32, v float32) {
		if len(h.idx) < k {
			h.idx = append(h.idx, j)
			h.val = append(h.val, v)
			// sift up
			i := len(h.idx) - 1
			for i > 0 {
				p := (i - 1) / 2
				if !h.less(i, p) {
					break
				}
				h.swap(i, p)
				i = p
			}
			return
		}
		if v < h.val[0] || (v == h.val[0] && j > h.idx[0]) {
			return
		}
		h.idx[0], h.val[0] = j, v
		i := 0
		for {
			l := 2*i + 1
			if l >= len(h.idx) {
				break
			}
			m := l
			if r := l + 1; r < len(h.idx) && h.less(r, l) {
				m = r
			}
			if !h.less(m, i) {
				break
			}
			h.swap(i, m)
			i = m
		}
	}
	if allowed == nil {
		for j, v := range row {
			if len(h.idx) == k && v < h.val[0] {
				continue
			}
			push(int32(j), v)
		}
		return
	}
	for _, j := range allowed {
		if v := row[j]; len(h.idx) < k || v >= h.val[0] {
			push(j, v)
		}
	}
}

// less orders the heap root as the entry to evict first: the smallest value,
// and among equal values the highest index.
func (h *topKHeap) less(a, b int) bool {
	if h.val[a] != h.val[b] {
		return h.val[a] < h.val[b]
	}
	return h.idx[a] > h.idx[b]
}

func (h *topKHeap) swap(a, b int) {
	h.idx[a], h.idx[b] = h.idx[b], h.idx[a]
	h.val[a], h.val[b] = h.val[b], h.val[a]
}
