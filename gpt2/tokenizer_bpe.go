package gpt2

// The merge loop is written here rather than taken from
// github.com/sugarme/tokenizer/model/bpe (v0.3.0) because that one is neither
// exact nor fast enough (measured with this file's pre-tokenizer in front of
// it, on testdata/tokenizer's goldens):
//   - its priority queue breaks ties between equal ranks by a timestamp that is
//     never set, so it does not merge occurrences of a pair left to right as
//     GPT-2 does: 3 of 1945 golden cases come out wrong ("!!!???...",
//     "==========", 300 × "a");
//   - it does not reproduce encoder.py's rounds, in which every occurrence of
//     the lowest-ranked pair merges before the pairs those merges create are
//     looked at (testdata/tokenizer/weird: 4 of 8 cases differ; Hugging Face
//     tokenizers behaves the same way there, GPT-2's merges never trigger it);
//   - 3.2 MB/s on Tiny Shakespeare against ~39 MB/s here, and 6 s for a single
//     16 KiB word (building a word is O(n²), with an fmt.Sprintf per character);
//   - it panics on a byte without a token when there is no unk token (toy
//     vocabularies), and its merges reader silently skips merges whose tokens
//     are not in the vocabulary. Its tokenizer.json reader panics on malformed
//     files (unchecked type assertions), so that is not used either.
//
// bpeEncodePiece implements encoder.py's algorithm exactly in O(n log n) per
// piece: a binary heap of candidate pairs ordered by (rank, position); the
// candidates of one rank are popped left to right, and the pairs created by
// those merges are held back until that rank is exhausted, which is what one
// round of encoder.py's `while True` loop does.

// bpeMerge is the result of merging one pair of token ids.
type bpeMerge struct {
	rank int32 // line of the merge in merges.txt (0-based); lower merges first
	id   int32 // id of the merged token
}

// bpePairKey packs a (left, right) token id pair into a map key.
func bpePairKey(left, right int32) uint64 {
	return uint64(uint32(left))<<32 | uint64(uint32(right))
}

// bpeSymbol is one token of a piece during merging, in a doubly linked list.
type bpeSymbol struct {
	id          int32
	prev, next  int // indices into the symbol slice; -1 at either end
	start, size int // bytes of the piece covered; size 0 once merged into its left neighbour
}

// bpeCand is a candidate merge of the symbol at pos with its right neighbour.
type bpeCand struct {
	pos         int
	rank        int32
	left, right int32 // the ids the pair had when queued, to detect stale entries
	id          int32
}

func bpeLess(a, b bpeCand) bool {
	return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos)
}

// bpeHeap is a binary min-heap of candidates (container/heap's interface calls
// cost more than the merges themselves for short pieces).
type bpeHeap []bpeCand

func (h *bpeHeap) push(c bpeCand) {
	*h = append(*h, c)
	s := *h
	i := len(s) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !bpeLess(s[i], s[p]) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *bpeHeap) pop() bpeCand {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s = s[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && bpeLess(s[r], s[l]) {
			m = r
		}
		if !bpeLess(s[m], s[i]) {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

// bpeScratch holds buffers reused across pieces within one Encode call.
type bpeScratch struct {
	syms    []bpeSymbol
	heap    bpeHeap
	pending []bpeCand
}

// bpeEncodePiece appends the ids of piece, and the byte range of the piece
// each covers, to ids, starts and sizes.
func (t *Tokenizer) bpeEncodePiece(piece string, sc *bpeScratch, ids []int32, starts, sizes []int) ([]int32, []int, []int) {
	if t.ignoreMerges {
		if id, ok := t.ids[piece]; ok && !t.added[id] {
			return append(ids, int32(id)), append(starts, 0), append(sizes, len(piece))
		}
	}
	syms := sc.syms[:0]
	lastUnk := false
	for i := 0; i < len(piece); i++ {
		id := t.byteID[piece[i]]
		if id >= 0 {
			syms = append(syms, bpeSymbol{id: id, start: i, size: 1})
			lastUnk = false
			continue
		}
		// No token for this byte: Hugging Face tokenizers substitutes the unk
		// token (one per byte, or one per run with fuse_unk) or, without one,
		// drops the byte; encoder.py would raise KeyError.
		switch {
		case t.unk < 0:
		case t.fuseUnk && lastUnk:
			syms[len(syms)-1].size++
		default:
			syms = append(syms, bpeSymbol{id: t.unk, start: i, size: 1})
			lastUnk = true
		}
	}
	n := len(syms)
	for i := range syms {
		syms[i].prev = i - 1
		syms[i].next = i + 1
	}
	if n > 0 {
		syms[n-1].next = -1
	}

	if n > 1 {
		h := sc.heap[:0]
		for i := 0; i+1 < n; i++ {
			l, r := syms[i].id, syms[i+1].id
			if m, ok := t.merges[bpePairKey(l, r)]; ok {
				h.push(bpeCand{rank: m.rank, pos: i, left: l, right: r, id: m.id})
			}
		}
		pending := sc.pending[:0]
		round := int32(-1)
		for {
			if len(h) == 0 || (len(pending) > 0 && h[0].rank != round) {
				if len(pending) == 0 {
					break
				}
				// The current rank is exhausted: the pairs its merges created
				// become candidates for the next round.
				for _, c := range pending {
					h.push(c)
				}
				pending = pending[:0]
				continue
			}
			c := h.pop()
			round = c.rank
			left := &syms[c.pos]
			if left.size == 0 || left.id != c.left || left.next < 0 {
				continue
			}
			right := &syms[left.next]
			if right.id != c.right {
				continue
			}
			left.id = c.id
			left.size = right.start + right.size - left.start
			right.size = 0
			left.next = right.next
			if left.next >= 0 {
				syms[left.next].prev = c.pos
			}
			if p := left.prev; p >= 0 {
				if m, ok := t.merges[bpePairKey(syms[p].id, left.id)]; ok {
					pending = append(pending, bpeCand{rank: m.rank, pos: p, left: syms[p].id, right: left.id, id: m.id})
				}
			}
			if q := left.next; q >= 0 {
				if m, ok := t.merges[bpePairKey(left.id, syms[q].id)]; ok {
					pending = append(pending, bpeCand{rank: m.rank, pos: c.pos, left: left.id, right: syms[q].id, id: m.id})
				}
			}
		}
		sc.heap, sc.pending = h, pending
	}

	for i := 0; i >= 0 && i < n; i = syms[i].next {
		ids = append(ids, syms[i].id)
		starts = append(starts, syms[i].start)
		sizes = append(sizes, syms[i].size)
	}
	sc.syms = syms
	return ids, starts, sizes
}
