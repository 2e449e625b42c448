package analysis

import (
	"context"
	"fmt"
	"strings"

	"github.com/factlens/factlens/gpt2"
)

// Prompt is a fact tokenized for the model: the token ids it runs, the
// subject's token span [SubjectStart, SubjectEnd), and the first token of the
// target and of each contrast.
type Prompt struct {
	Fact         Fact     `json:"fact"`
	Text         string   `json:"text"`
	Tokens       []int    `json:"tokens"`
	Strs         []string `json:"strs"`
	BOS          bool     `json:"bos"` // Tokens[0] is a BOS token added before Text
	SubjectStart int      `json:"subject_start"`
	SubjectEnd   int      `json:"subject_end"`
	Target       int      `json:"target"`
	Contrasts    []int    `json:"contrasts,omitempty"`
}

// LastSubject is the position of the subject's last token.
func (p *Prompt) LastSubject() int { return p.SubjectEnd - 1 }

// Contrast is the first contrast token, or -1 if there is none.
func (p *Prompt) Contrast() int {
	if len(p.Contrasts) == 0 {
		return -1
	}
	return p.Contrasts[0]
}

// PromptOptions control BuildPrompt.
type PromptOptions struct {
	// PrependBOS puts bos (<|endoftext|>) before the prompt, as
	// TransformerLens does by default; ROME runs prompts without it.
	PrependBOS bool
}

// BuildPrompt tokenizes a fact. The subject's tokens are those whose bytes
// overlap the subject's bytes in the filled-in text (as ROME's
// find_token_range does), so a leading-space token such as " Jordan" counts
// as the subject's even though its space belongs to the template. Target and
// contrasts are reduced to their first token.
func BuildPrompt(tok *gpt2.Tokenizer, f Fact, opts PromptOptions) (*Prompt, error) {
	if err := f.validate(); err != nil {
		return nil, fmt.Errorf("analysis: fact %s: %w", f.ID, err)
	}
	p := &Prompt{Fact: f, Text: f.Text(), BOS: opts.PrependBOS}
	var err error
	p.Tokens, p.SubjectStart, p.SubjectEnd, err = tokenizeWithSubject(tok, f.Prompt, f.Subject, opts.PrependBOS)
	if err != nil {
		return nil, fmt.Errorf("analysis: fact %s: %w", f.ID, err)
	}
	for _, id := range p.Tokens {
		p.Strs = append(p.Strs, tok.Token(id))
	}
	if p.Target, err = firstToken(tok, f.Target); err != nil {
		return nil, fmt.Errorf("analysis: fact %s: target: %w", f.ID, err)
	}
	for _, c := range f.Contrasts {
		id, err := firstToken(tok, c)
		if err != nil {
			return nil, fmt.Errorf("analysis: fact %s: contrast: %w", f.ID, err)
		}
		if id != p.Target {
			p.Contrasts = append(p.Contrasts, id)
		}
	}
	return p, nil
}

// tokenizeWithSubject fills template's "{}" with subject, tokenizes the
// text (after a BOS token if bos) and returns the tokens and the subject's
// token span [start, end): the tokens whose bytes overlap the subject's.
func tokenizeWithSubject(tok *gpt2.Tokenizer, template, subject string, bos bool) (tokens []int, start, end int, err error) {
	prefix, _, ok := strings.Cut(template, "{}")
	if !ok {
		return nil, 0, 0, fmt.Errorf("template %q has no \"{}\"", template)
	}
	text := strings.Replace(template, "{}", subject, 1)
	ids, spans := tok.EncodeOffsets(text)
	if bos {
		eot := tok.EOT()
		if eot < 0 {
			return nil, 0, 0, fmt.Errorf("the tokenizer has no <|endoftext|> to use as BOS")
		}
		tokens = []int{eot}
	}
	off := len(tokens)
	subjStart, subjEnd := len(prefix), len(prefix)+len(subject)
	start, end = -1, -1
	for i, id := range ids {
		tokens = append(tokens, id)
		if spans[i][1] > subjStart && spans[i][0] < subjEnd {
			if start < 0 {
				start = off + i
			}
			end = off + i + 1
		}
	}
	if start < 0 {
		return nil, 0, 0, fmt.Errorf("no token covers subject %q in %q", subject, text)
	}
	return tokens, start, end, nil
}

func firstToken(tok *gpt2.Tokenizer, s string) (int, error) {
	ids := tok.Encode(s)
	if len(ids) == 0 {
		return -1, fmt.Errorf("%q has no tokens", s)
	}
	return ids[0], nil
}

// FactScore is how a model does on one prompt: the target's probability and
// rank at the last position, the top token, and the target's logit minus the
// best contrast's (0 without contrasts).
type FactScore struct {
	TargetProb float64 `json:"target_prob"`
	TargetRank int     `json:"target_rank"`
	Top        int     `json:"top"`
	TopProb    float64 `json:"top_prob"`
	LogitDiff  float64 `json:"logit_diff"`
}

// Correct reports ROME's criterion: the model's greedy next token is the target.
func (s FactScore) Correct() bool { return s.TargetRank == 0 }

// ScoreFacts runs every prompt (grouped by length, so without padding) and
// scores it. Use it to keep only the facts the model knows: ROME keeps
// greedy-correct ones (Correct), Fact Finding those with TargetProb > 0.5.
func ScoreFacts(ctx context.Context, m *gpt2.Model, prompts []*Prompt) ([]FactScore, error) {
	out := make([]FactScore, len(prompts))
	byLen := map[int][]int{}
	var lens []int
	for i, p := range prompts {
		if err := checkTokens(m, p.Tokens); err != nil {
			return nil, fmt.Errorf("%w (prompt %d)", err, i)
		}
		if _, ok := byLen[len(p.Tokens)]; !ok {
			lens = append(lens, len(p.Tokens))
		}
		byLen[len(p.Tokens)] = append(byLen[len(p.Tokens)], i)
	}
	for _, n := range lens {
		idx := byLen[n]
		rows := max(1, defaultMaxTokens/n)
		for s := 0; s < len(idx); s += rows {
			chunk := idx[s:min(s+rows, len(idx))]
			batch := make([][]int, len(chunk))
			for r, i := range chunk {
				batch[r] = prompts[i].Tokens
			}
			res, err := m.Run(ctx, batch, gpt2.RunOptions{Logits: gpt2.LogitsLast})
			if err != nil {
				return nil, fmt.Errorf("analysis: scoring facts: %w", err)
			}
			for r, i := range chunk {
				row := res.Logits.At(r, 0)
				p := prompts[i]
				top := argmax(row)
				fs := FactScore{TargetProb: prob(row, p.Target), TargetRank: rankOf(row, p.Target), Top: top, TopProb: prob(row, top)}
				if len(p.Contrasts) > 0 {
					best := row[p.Contrasts[0]]
					for _, c := range p.Contrasts[1:] {
						best = max(best, row[c])
					}
					fs.LogitDiff = float64(row[p.Target]) - float64(best)
				}
				out[i] = fs
			}
		}
	}
	return out, nil
}
