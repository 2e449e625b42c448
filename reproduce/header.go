package reproduce

import (
	"time"

	"github.com/factlens/factlens/gpt2"
)

// Progress, when set, is told how far a study got: done of total items of
// the named stage. A new stage name starts a new count.
type Progress func(stage string, done, total int)

func (p Progress) report(stage string, done, total int) {
	if p != nil {
		p(stage, done, total)
	}
}

// Header is what every study's result carries besides its measurements: the
// model and data behind the numbers, the settings, the findings, and what
// the run cost.
type Header struct {
	Study      string `json:"study"`
	Model      string `json:"model"`
	Repo       string `json:"repo,omitempty"`
	Revision   string `json:"revision,omitempty"`
	Commit     string `json:"commit,omitempty"`
	Processing string `json:"processing"`
	PrependBOS bool   `json:"prepend_bos"`
	Layers     int    `json:"layers"`
	DModel     int    `json:"d_model"`
	DMLP       int    `json:"d_mlp"`

	Dataset  DatasetInfo `json:"dataset"`
	Settings []Setting   `json:"settings"`
	Findings []Finding   `json:"findings"`
	Costs    []Cost      `json:"costs"`
	Seconds  float64     `json:"seconds"`
}

// Setting is one knob of a run, in words.
type Setting struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Cost is the time one stage of a run took: Items facts (or prompts) in
// Seconds, PerItem seconds each. README time estimates come from these.
type Cost struct {
	Stage   string  `json:"stage"`
	Items   int     `json:"items"`
	Seconds float64 `json:"seconds"`
	PerItem float64 `json:"per_item"`
}

func newHeader(study string, m *gpt2.Model, bos bool) Header {
	return Header{Study: study, Model: m.Source.Ref, Repo: m.Source.Repo, Revision: m.Source.Revision, Commit: m.Source.Commit,
		Processing: m.Processing.String(), PrependBOS: bos, Layers: m.NLayer(), DModel: m.DModel(), DMLP: m.DMLP()}
}

func (h *Header) set(name, value string) {
	h.Settings = append(h.Settings, Setting{Name: name, Value: value})
}

// timed records the cost of a stage that began at start.
func (h *Header) timed(stage string, items int, start time.Time) {
	s := time.Since(start).Seconds()
	c := Cost{Stage: stage, Items: items, Seconds: s}
	if items > 0 {
		c.PerItem = s / float64(items)
	}
	h.Costs = append(h.Costs, c)
}

// Finding returns the finding of the claim with the given ID, or nil.
func (h *Header) Finding(id string) *Finding {
	for i := range h.Findings {
		if h.Findings[i].Claim.ID == id {
			return &h.Findings[i]
		}
	}
	return nil
}

// depth is the fraction of the network's blocks up to and including layer
// l: layer 15 of GPT-2 XL's 48 is at 0.33, the last layer at 1.
func depth(l, layers int) float64 { return float64(l+1) / float64(layers) }
