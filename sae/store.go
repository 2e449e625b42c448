package sae

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/weights"
)

// Tokenizer is what the activation store needs of a tokenizer;
// *gpt2.Tokenizer has it.
type Tokenizer interface {
	Encode(text string) []int
	EOT() int
}

// StoreConfig describes where a ModelSource's activations come from.
type StoreConfig struct {
	// Hook is the TransformerLens hook point to read ("blocks.8.hook_resid_pre").
	// Hooks with a head dimension (hook_z, hook_q, …) give rows of
	// n_head·d_head values, or d_head values of one head with HeadIndex.
	Hook      string
	HeadIndex *int

	// Files are the corpus: plain text (each file one document), JSON
	// Lines (*.jsonl, *.json: one document per line, its TextColumn field)
	// or Parquet (*.parquet: one document per row of its TextColumn column).
	// An entry hf://datasets/ORG/NAME[@REVISION]/PATH (huggingface_hub's
	// HfFileSystem form) is a file of a Hugging Face dataset repository,
	// downloaded through Hub into its cache when first read. Documents are
	// joined with <|endoftext|> into one token stream that is cut into
	// windows.
	Files []string
	// TextColumn names the Parquet column or JSON Lines field holding the
	// text (default DefaultTextColumn, "text").
	TextColumn string
	// Hub fetches hf:// corpus entries; it may be nil when there are none.
	Hub *weights.Hub

	// ContextSize is the number of positions per window including the BOS
	// token when PrependBOS is set (SAELens context_size, default 128).
	ContextSize int
	PrependBOS  bool
	// ExcludeBOS drops the BOS position's activations (SAELens
	// exclude_special_tokens); the BOS residual of GPT-2 is an outlier.
	ExcludeBOS bool

	ModelBatch  int    // windows per forward pass (default 8)
	BufferRows  int    // rows in the shuffling buffer (default 32768)
	Seed        uint64 // shuffling
	SinglePass  bool   // fail with io.EOF at the end of the corpus instead of starting over
	MaxDocBytes int    // plain-text files are tokenized in paragraph-aligned pieces of about this size (default 1 MiB)
}

// ModelSource harvests activations at one hook point of a GPT-2 model run
// over a text corpus, shuffled through a mixing buffer as SAELens'
// ActivationsStore does: the buffer is filled, shuffled, and half of it is
// served before it is refilled, so rows of one window are spread over many
// batches. Only the blocks up to the hook point run (gpt2.LogitsNone stops
// after the last hook point needed).
type ModelSource struct {
	m           *gpt2.Model
	cfg         StoreConfig
	dIn         int
	toks        *tokenStream
	rng         *rand.Rand
	buf         []float32
	have        int       // rows in buf
	ready       int       // rows at the front of buf that may be served
	windowsDone int64     // windows harvested so far
	hookDims    []int     // trailing shape of the hook activation
	overflow    []float32 // harvested rows that did not fit in the buffer yet
}

// NewModelSource checks the hook and the corpus and prepares the store; no
// model runs until the first Next.
func NewModelSource(m *gpt2.Model, tok Tokenizer, cfg StoreConfig) (*ModelSource, error) {
	if cfg.ContextSize == 0 {
		cfg.ContextSize = 128
	}
	if cfg.ModelBatch == 0 {
		cfg.ModelBatch = 8
	}
	if cfg.BufferRows == 0 {
		cfg.BufferRows = 32768
	}
	if cfg.MaxDocBytes == 0 {
		cfg.MaxDocBytes = 1 << 20
	}
	if err := m.CheckHookName(cfg.Hook); err != nil {
		return nil, fmt.Errorf("sae: store: %w", err)
	}
	minCtx := 1
	if cfg.PrependBOS {
		minCtx = 2
	}
	if cfg.ContextSize < minCtx || cfg.ContextSize > m.NCtx() {
		return nil, fmt.Errorf("sae: store: context size %d must be in [%d, n_positions %d]", cfg.ContextSize, minCtx, m.NCtx())
	}
	if cfg.TextColumn == "" {
		cfg.TextColumn = DefaultTextColumn
	}
	if err := checkCorpus(cfg.Files, cfg.Hub); err != nil {
		return nil, err
	}
	dims, err := hookTrailingShape(m, cfg.Hook)
	if err != nil {
		return nil, err
	}
	dIn := 1
	for _, d := range dims {
		dIn *= d
	}
	if cfg.HeadIndex != nil {
		if len(dims) != 2 || *cfg.HeadIndex < 0 || *cfg.HeadIndex >= dims[0] {
			return nil, fmt.Errorf("sae: store: head index %d does not fit hook %s of shape %v", *cfg.HeadIndex, cfg.Hook, dims)
		}
		dIn = dims[1]
	}
	s := &ModelSource{m: m, cfg: cfg, dIn: dIn, hookDims: dims}
	s.toks = newTokenStream(tok, cfg, !cfg.SinglePass)
	s.rng = rand.New(rand.NewPCG(cfg.Seed, 0))
	return s, nil
}

// TrainMetadata is what an SAE trained on this source should record in its
// cfg.json: the model, hook, context and corpus, and the model's weight
// processing.
func (s *ModelSource) TrainMetadata() (Metadata, Processing) {
	name := s.m.Source.Repo
	if name == "" {
		name = s.m.Source.Ref
	}
	md := Metadata{
		ModelName: name, HookName: s.cfg.Hook, HookHeadIndex: s.cfg.HeadIndex,
		ContextSize: s.cfg.ContextSize, PrependBOS: s.cfg.PrependBOS,
		DatasetPath: strings.Join(s.cfg.Files, ","),
	}
	p := ProcessingOf(s.m.Processing)
	md.ModelFromPretrainedKwargs = p.Kwargs()
	return md, p
}

// hookTrailingShape is the shape of one position's activation at hook, from
// the package documentation's table.
func hookTrailingShape(m *gpt2.Model, hook string) ([]int, error) {
	switch {
	case strings.HasSuffix(hook, "attn.hook_q"), strings.HasSuffix(hook, "attn.hook_k"),
		strings.HasSuffix(hook, "attn.hook_v"), strings.HasSuffix(hook, "attn.hook_z"):
		return []int{m.NHead(), m.DHead()}, nil
	case strings.HasSuffix(hook, "attn.hook_result"):
		return []int{m.NHead(), m.DModel()}, nil
	case strings.HasSuffix(hook, "mlp.hook_pre"), strings.HasSuffix(hook, "mlp.hook_post"):
		return []int{m.DMLP()}, nil
	case strings.HasSuffix(hook, "hook_scale"):
		return []int{1}, nil
	case strings.HasSuffix(hook, "hook_attn_scores"), strings.HasSuffix(hook, "hook_pattern"):
		return nil, fmt.Errorf("sae: hook %s is per attention pair, not per token", hook)
	}
	return []int{m.DModel()}, nil
}

// DIn implements Source.
func (s *ModelSource) DIn() int { return s.dIn }

// Next implements Source.
func (s *ModelSource) Next(ctx context.Context, dst []float32) error {
	d := s.dIn
	if len(dst)%d != 0 {
		return fmt.Errorf("sae: store: %d values is not a whole number of rows of %d", len(dst), d)
	}
	n := len(dst) / d
	if s.buf == nil {
		s.buf = make([]float32, max(s.cfg.BufferRows, n)*d)
	}
	for done := 0; done < n; {
		if s.ready == 0 {
			if err := s.refill(ctx); err != nil {
				return err
			}
		}
		for ; s.ready > 0 && done < n; done++ {
			// Serve the last ready row and move the buffer's last row into
			// its place: the kept half stays, order is random anyway.
			i := s.ready - 1
			copy(dst[done*d:(done+1)*d], s.buf[i*d:(i+1)*d])
			last := s.have - 1
			copy(s.buf[i*d:(i+1)*d], s.buf[last*d:(last+1)*d])
			s.have--
			s.ready--
		}
	}
	return nil
}

// refill harvests until the buffer is full (or the corpus ends), shuffles it
// and marks half of it as ready to serve.
func (s *ModelSource) refill(ctx context.Context) error {
	rows := len(s.buf) / s.dIn
	ended := false
	s.overflow = s.take(s.overflow, rows)
	for s.have < rows && !ended {
		if err := ctx.Err(); err != nil {
			return err
		}
		var windows [][]int
		for len(windows) < s.cfg.ModelBatch {
			w, err := s.toks.window(ctx, s.windowLen())
			if errors.Is(err, io.EOF) {
				ended = true
				break
			}
			if err != nil {
				return err
			}
			windows = append(windows, w)
		}
		if len(windows) == 0 {
			break
		}
		acts, err := s.harvest(ctx, windows)
		if err != nil {
			return err
		}
		s.windowsDone += int64(len(windows))
		s.overflow = append(s.overflow, s.take(acts, rows)...)
	}
	if s.have == 0 {
		return fmt.Errorf("sae: store: corpus exhausted: %w", io.EOF)
	}
	// Fisher–Yates over the whole buffer.
	d := s.dIn
	tmp := make([]float32, d)
	for i := s.have - 1; i > 0; i-- {
		j := s.rng.IntN(i + 1)
		if i != j {
			copy(tmp, s.buf[i*d:(i+1)*d])
			copy(s.buf[i*d:(i+1)*d], s.buf[j*d:(j+1)*d])
			copy(s.buf[j*d:(j+1)*d], tmp)
		}
	}
	s.ready = max(s.have/2, 1)
	if ended {
		s.ready = s.have
	}
	return nil
}

// take moves as many rows of acts as fit into the buffer and returns the rest.
func (s *ModelSource) take(acts []float32, rows int) []float32 {
	m := min(rows-s.have, len(acts)/s.dIn)
	copy(s.buf[s.have*s.dIn:], acts[:m*s.dIn])
	s.have += m
	return acts[m*s.dIn:]
}

func (s *ModelSource) windowLen() int {
	if s.cfg.PrependBOS {
		return s.cfg.ContextSize - 1
	}
	return s.cfg.ContextSize
}

// harvest runs the model on windows and returns the hook's rows.
func (s *ModelSource) harvest(ctx context.Context, windows [][]int) ([]float32, error) {
	res, err := s.m.Run(ctx, windows, gpt2.RunOptions{
		Cache: gpt2.HookName(s.cfg.Hook), Logits: gpt2.LogitsNone, PrependBOS: s.cfg.PrependBOS,
	})
	if err != nil {
		return nil, fmt.Errorf("sae: store: %w", err)
	}
	a := res.Cache[s.cfg.Hook]
	if a == nil {
		return nil, fmt.Errorf("sae: store: the run did not reach hook %s", s.cfg.Hook)
	}
	skipFirst := s.cfg.PrependBOS && s.cfg.ExcludeBOS
	return activationRows(a, s.cfg.HeadIndex, skipFirst)
}

// activationRows flattens a [batch, pos, …] activation into rows of the
// trailing dimensions (one head's slice with head), optionally without each
// sequence's first position.
func activationRows(a *gpt2.Activation, head *int, skipFirst bool) ([]float32, error) {
	if len(a.Shape) < 3 {
		return nil, fmt.Errorf("sae: activation %s has shape %v, want [batch, pos, …]", a.Name, a.Shape)
	}
	b, p := a.Shape[0], a.Shape[1]
	width := len(a.Data) / (b * p)
	first := 0
	if skipFirst {
		first = 1
	}
	if head == nil {
		out := make([]float32, 0, b*(p-first)*width)
		for i := 0; i < b; i++ {
			out = append(out, a.Data[(i*p+first)*width:(i+1)*p*width]...)
		}
		return out, nil
	}
	if len(a.Shape) != 4 || *head < 0 || *head >= a.Shape[2] {
		return nil, fmt.Errorf("sae: head index %d does not fit activation %s of shape %v", *head, a.Name, a.Shape)
	}
	dh := a.Shape[3]
	out := make([]float32, 0, b*(p-first)*dh)
	for i := 0; i < b; i++ {
		for t := first; t < p; t++ {
			row := a.Data[(i*p+t)*width : (i*p+t+1)*width]
			out = append(out, row[*head*dh:(*head+1)*dh]...)
		}
	}
	return out, nil
}

// sourceState is what a checkpoint records of a ModelSource.
type sourceState struct {
	Windows int64 `json:"windows"`
}

// MarshalState implements StatefulSource: the number of windows harvested.
func (s *ModelSource) MarshalState() ([]byte, error) {
	return json.Marshal(sourceState{Windows: s.windowsDone})
}

// UnmarshalState implements StatefulSource. The corpus is re-tokenized (not
// re-run through the model) up to the recorded window and the shuffling
// generator is re-seeded from that position; rows that were still in the
// mixing buffer when the checkpoint was written are skipped, so a resumed
// run sees fresh data but not exactly the rows an uninterrupted run would.
// The interface gives no context: hf:// corpus files that must be fetched
// again are downloaded without a deadline.
func (s *ModelSource) UnmarshalState(b []byte) error {
	var st sourceState
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("sae: store: state: %w", err)
	}
	s.toks = newTokenStream(s.toks.tok, s.cfg, !s.cfg.SinglePass)
	for i := int64(0); i < st.Windows; i++ {
		if _, err := s.toks.window(context.Background(), s.windowLen()); err != nil {
			return fmt.Errorf("sae: store: skipping to window %d: %w", st.Windows, err)
		}
	}
	s.windowsDone = st.Windows
	s.rng = rand.New(rand.NewPCG(s.cfg.Seed, uint64(st.Windows)))
	s.have, s.ready, s.overflow = 0, 0, nil
	return nil
}

// Windows cuts the corpus into up to n windows of StoreConfig's context
// (without the BOS token, which Run's PrependBOS adds), for evaluation.
// The files are local; CorpusWindows also reads hf:// entries.
func Windows(tok Tokenizer, files []string, contextSize int, prependBOS bool, n int) ([][]int, error) {
	return CorpusWindows(context.Background(), tok, StoreConfig{Files: files, ContextSize: contextSize, PrependBOS: prependBOS}, n)
}

// CorpusWindows is Windows over cfg's corpus (Files, TextColumn, Hub),
// context size and PrependBOS; the other fields are ignored.
func CorpusWindows(ctx context.Context, tok Tokenizer, cfg StoreConfig, n int) ([][]int, error) {
	if cfg.TextColumn == "" {
		cfg.TextColumn = DefaultTextColumn
	}
	cfg.MaxDocBytes = 1 << 20
	if err := checkCorpus(cfg.Files, cfg.Hub); err != nil {
		return nil, err
	}
	ts := newTokenStream(tok, cfg, false)
	l := cfg.ContextSize
	if cfg.PrependBOS {
		l--
	}
	if l <= 0 {
		return nil, fmt.Errorf("sae: context size %d is too small", cfg.ContextSize)
	}
	var out [][]int
	for len(out) < n {
		w, err := ts.window(ctx, l)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("sae: the corpus holds fewer than %d tokens", l)
	}
	return out, nil
}

// checkCorpus fails early on an empty corpus, a missing local file, a
// malformed hf:// entry or one that cannot be fetched for want of a Hub.
func checkCorpus(files []string, hub *weights.Hub) error {
	if len(files) == 0 {
		return errors.New("sae: no corpus files")
	}
	for _, f := range files {
		if !isHFURI(f) {
			if _, err := os.Stat(f); err != nil {
				return fmt.Errorf("sae: corpus: %w", err)
			}
			continue
		}
		if _, err := parseHFURI(f); err != nil {
			return err
		}
		if hub == nil {
			return errNoHub(f)
		}
	}
	return nil
}

// tokenStream turns corpus files into a stream of token windows.
type tokenStream struct {
	files   []string
	tok     Tokenizer
	maxDoc  int
	column  string
	hub     *weights.Hub
	local   map[string]string // hf:// entry → its file in the Hub cache
	repeat  bool
	fileIdx int
	docs    *docReader
	pending []int
	anyDoc  bool // some document produced tokens (guards against looping over an empty corpus)
}

func newTokenStream(tok Tokenizer, cfg StoreConfig, repeat bool) *tokenStream {
	return &tokenStream{files: cfg.Files, tok: tok, maxDoc: cfg.MaxDocBytes, column: cfg.TextColumn,
		hub: cfg.Hub, local: map[string]string{}, repeat: repeat}
}

// localPath is where entry is read from: the entry itself, or for an hf://
// entry its file in the Hub cache, downloaded on first use. Later passes
// over the corpus reuse the path found the first time.
func (ts *tokenStream) localPath(ctx context.Context, entry string) (string, error) {
	if !isHFURI(entry) {
		return entry, nil
	}
	if p, ok := ts.local[entry]; ok {
		return p, nil
	}
	d, err := parseHFURI(entry)
	if err != nil {
		return "", err
	}
	if ts.hub == nil {
		return "", errNoHub(entry)
	}
	p, _, err := ts.hub.DownloadDataset(ctx, d.repo, d.revision, d.path)
	if err != nil {
		return "", fmt.Errorf("sae: corpus %s: %w", entry, err)
	}
	ts.local[entry] = p
	return p, nil
}

func (ts *tokenStream) window(ctx context.Context, n int) ([]int, error) {
	for len(ts.pending) < n {
		if ts.docs == nil {
			if ts.fileIdx == len(ts.files) {
				if !ts.repeat || !ts.anyDoc {
					return nil, io.EOF
				}
				ts.fileIdx = 0
			}
			path, err := ts.localPath(ctx, ts.files[ts.fileIdx])
			if err != nil {
				return nil, err
			}
			r, err := openDocs(path, ts.maxDoc, ts.column)
			if err != nil {
				return nil, err
			}
			ts.docs = r
			ts.fileIdx++
		}
		text, end, err := ts.docs.next()
		if errors.Is(err, io.EOF) {
			ts.docs.close()
			ts.docs = nil
			continue
		}
		if err != nil {
			return nil, err
		}
		ids := ts.tok.Encode(text)
		if len(ids) > 0 {
			ts.anyDoc = true
		}
		ts.pending = append(ts.pending, ids...)
		if end {
			ts.pending = append(ts.pending, ts.tok.EOT())
		}
	}
	w := append([]int(nil), ts.pending[:n]...)
	ts.pending = ts.pending[n:]
	return w, nil
}

// docReader yields the documents of one file: the text fields of JSON
// Lines, the text column of Parquet, or a plain-text file in
// paragraph-aligned pieces (end is true on the last piece of a document).
type docReader struct {
	path   string
	f      *os.File
	sc     *bufio.Scanner
	jsonl  bool
	pq     *parquetDocs
	column string
	maxDoc int
	line   int
	done   bool
}

var (
	jsonlName   = regexp.MustCompile(`(?i)\.jsonl?$`)
	parquetName = regexp.MustCompile(`(?i)\.parquet$`)
)

func openDocs(path string, maxDoc int, column string) (*docReader, error) {
	if parquetName.MatchString(filepath.Base(path)) {
		pq, err := openParquetDocs(path, column)
		if err != nil {
			return nil, err
		}
		return &docReader{path: path, pq: pq}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sae: corpus: %w", err)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 256<<20)
	return &docReader{path: path, f: f, sc: sc, jsonl: jsonlName.MatchString(filepath.Base(path)), column: column, maxDoc: maxDoc}, nil
}

func (r *docReader) close() {
	if r.pq != nil {
		r.pq.close()
		return
	}
	r.f.Close()
}

func (r *docReader) next() (text string, end bool, err error) {
	if r.pq != nil {
		text, err := r.pq.next()
		return text, err == nil, err
	}
	if r.jsonl {
		for r.sc.Scan() {
			r.line++
			line := strings.TrimSpace(r.sc.Text())
			if line == "" {
				continue
			}
			var doc map[string]json.RawMessage
			if err := json.Unmarshal([]byte(line), &doc); err != nil {
				return "", false, fmt.Errorf("sae: corpus %s:%d: %w", r.path, r.line, err)
			}
			field, ok := doc[r.column]
			if !ok || string(field) == "null" {
				return "", false, fmt.Errorf("sae: corpus %s:%d: no %q field", r.path, r.line, r.column)
			}
			var text string
			if err := json.Unmarshal(field, &text); err != nil {
				return "", false, fmt.Errorf("sae: corpus %s:%d: field %q: %w", r.path, r.line, r.column, err)
			}
			return text, true, nil
		}
		if err := r.sc.Err(); err != nil {
			return "", false, fmt.Errorf("sae: corpus %s: %w", r.path, err)
		}
		return "", false, io.EOF
	}
	if r.done {
		return "", false, io.EOF
	}
	// Plain text: collect lines up to maxDoc bytes and then to the next
	// blank line, so that pieces split where the tokenizer would anyway.
	var b strings.Builder
	for r.sc.Scan() {
		line := r.sc.Text()
		b.WriteString(line)
		b.WriteByte('\n')
		if b.Len() >= r.maxDoc && strings.TrimSpace(line) == "" {
			return b.String(), false, nil
		}
	}
	if err := r.sc.Err(); err != nil {
		return "", false, fmt.Errorf("sae: corpus %s: %w", r.path, err)
	}
	r.done = true
	return b.String(), true, nil
}
