package reproduce

import (
	"fmt"
	"math"
)

// Claim is one published finding: what it says, where, and the figure the
// paper gives for it.
type Claim struct {
	ID    string `json:"id"`
	Study string `json:"study"`
	// Short names the claim in a table; Statement says it in full.
	Short     string `json:"short"`
	Statement string `json:"statement"`
	// Cite is the source in brief ("Meng et al. 2022"); Source in full.
	Cite   string `json:"cite"`
	Source string `json:"source"`
	// Figure is the published figure in brief, for a table.
	Figure string `json:"figure"`
	// Paper is the published figure as the source states it, with the model
	// it was measured on.
	Paper string `json:"paper"`
	// PaperValue is that figure as a number comparable to Finding.Value,
	// when there is one.
	PaperValue *float64 `json:"paper_value,omitempty"`
}

// Status is the kind of a verdict.
type Status string

// The verdicts a finding can get.
const (
	Supported    Status = "supported"
	NotSupported Status = "not supported"
	NotFound     Status = "not found"    // the model shows nothing to measure (e.g. knows 0 facts)
	Inconclusive Status = "inconclusive" // too few facts for the rule
	NotMeasured  Status = "not measured" // an input the part needs was not given
)

// Verdict is a finding's verdict: its kind, the verdict in words with the
// numbers it rests on, and the rule that produced it.
type Verdict struct {
	Status Status `json:"status"`
	Text   string `json:"text"`
	Rule   string `json:"rule"`
}

// Finding is one claim checked on one model.
type Finding struct {
	Claim Claim `json:"claim"`
	// Ours states this model's numbers in words, Brief in a few words for
	// a table; Value is the one number comparable to Claim.PaperValue,
	// when there is one.
	Ours  string   `json:"ours"`
	Brief string   `json:"brief"`
	Value *float64 `json:"value,omitempty"`
	// N is the number of facts (or examples) the numbers rest on.
	N       int     `json:"n"`
	Verdict Verdict `json:"verdict"`
}

func num(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// Claim IDs.
const (
	ClaimROMEATE    = "rome-ate"
	ClaimROMEHidden = "rome-hidden"
	ClaimROMEMLP    = "rome-mlp"
	ClaimROMEAttn   = "rome-attn"

	ClaimFFLookup         = "ff-lookup"
	ClaimFFGather         = "ff-gather"
	ClaimFFProbe          = "ff-probe"
	ClaimFFNoANDGate      = "ff-no-and-gate"
	ClaimFFCounterfactual = "ff-counterfactual"

	ClaimSupUnderdetermined = "sup-underdetermined"
	ClaimSupSAEL0           = "sup-sae-l0"
	ClaimSupSharedANDs      = "sup-shared-ands"
	ClaimSupToy             = "sup-toy"

	ClaimSPName  = "sp-name"
	ClaimSPSport = "sp-sport"
)

// Study names, as the CLI spells them.
const (
	StudyROME          = "rome"
	StudyFactFinding   = "fact-finding"
	StudySuperposition = "superposition"
	StudySparseProbing = "sparse-probing"
)

// Sources cited by the claims.
const (
	sourceROME = "Meng, Bau, Andonian & Belinkov, \"Locating and Editing Factual Associations in GPT\", NeurIPS 2022 (arXiv 2202.05262), §2, Fig. 2, App. B"
	sourceFF1  = "Nanda, Rajamanoharan, Kramár & Shah, \"Fact Finding\", Alignment Forum, Dec 2023, post 1 (alignmentforum.org/posts/iGuwZTHWb6DFY3sKB)"
	sourceFF2  = "Nanda, Rajamanoharan, Kramár & Shah, \"Fact Finding\", Alignment Forum, Dec 2023, post 2 (alignmentforum.org/posts/3tqJ65kuTkBh8wrRH)"
	sourceUAND = "Hänni, Mendel, Vaintrob & Chan, \"Mathematical Models of Computation in Superposition\", 2024 (arXiv 2408.05451); Vaintrob, Mendel & Hänni, \"Toward a Mathematical Framework for Computation in Superposition\", LessWrong, Jan 2024"
	sourceSAE  = "the \"30–100 features at a time\" figure as the factlens issue quotes it (its primary source is not verified here); for comparison, SAELens sae_lens/pretrained_saes.yaml lists the L0 of gpt2-small-res-jb (jbloom/GPT2-Small-SAEs-Reformatted) by layer 0–11 as 10, 10, 18, 23, 31, 41, 51, 54, 60, 70, 52, 56"
	sourceSP   = "Gurnee, Nanda, Pauly, Harvey, Troitskii & Bertsimas, \"Finding Neurons in a Haystack: Case Studies with Sparse Probing\", TMLR 2023 (arXiv 2305.01610); neuron tables in wesg52/sparse-probing-paper"
)

// Claims lists every published claim the studies check, with its source and
// figures. It returns a fresh slice on each call.
func Claims() []Claim {
	return []Claim{
		{ID: ClaimROMEATE, Study: StudyROME, Source: sourceROME, Short: "average total effect (ATE)", Cite: "Meng et al. 2022", Figure: "ATE 18.6% (GPT-2 XL)",
			Statement:  "Corrupting the subject's token embeddings (Gaussian noise, ν = 3σ) lowers the probability of the correct attribute: the average total effect (ATE) is large",
			Paper:      "ATE 18.6% (mean P(attribute) 27.0% clean → 8.47% corrupted), GPT-2 XL, 1,000 known facts",
			PaperValue: num(0.186)},
		{ID: ClaimROMEHidden, Study: StudyROME, Source: sourceROME, Short: "hidden-state AIE, last subject token", Cite: "Meng et al. 2022", Figure: "8.7% at layer 15/48",
			Statement:  "Restoring one hidden state at the last subject token in the early-middle layers restores much of the answer",
			Paper:      "hidden-state AIE 8.7% at layer 15 of 48 (depth 0.31), last subject token, GPT-2 XL",
			PaperValue: num(0.087)},
		{ID: ClaimROMEMLP, Study: StudyROME, Source: sourceROME, Short: "MLP AIE, last subject token (early site)", Cite: "Meng et al. 2022", Figure: "6.6%, window at layer 17/48",
			Statement:  "MLP outputs at the last subject token in the early-middle layers mediate the recall (the early site)",
			Paper:      "MLP AIE 6.6% at the last subject token (10-layer windows; peak window centred at layer 17 of 48), GPT-2 XL",
			PaperValue: num(0.066)},
		{ID: ClaimROMEAttn, Study: StudyROME, Source: sourceROME, Short: "attention: little at subject, late at last token", Cite: "Meng et al. 2022", Figure: "1.6% at subject; layer 32/48 at last token",
			Statement:  "Attention at the last subject token matters little; attention matters at the last token in later layers (the late site)",
			Paper:      "attention AIE 1.6% at the last subject token; its peak window is centred at layer 32 of 48 at the last token, GPT-2 XL",
			PaperValue: num(0.016)},

		{ID: ClaimFFLookup, Study: StudyFactFinding, Source: sourceFF1, Short: "lookup by early MLPs at the final name token", Cite: "Nanda et al. 2023, post 1", Figure: "MLPs 2–6 of 32",
			Statement: "The athlete's sport is looked up at the final name token by early MLP layers",
			Paper:     "MLPs 2–6 of Pythia 2.8B (32 layers), at the final name token; 1,500 athletes known with P(sport) > 50%"},
		{ID: ClaimFFGather, Study: StudyFactFinding, Source: sourceFF1, Short: "attention 0–1 gathers the name", Cite: "Nanda et al. 2023, post 1", Figure: "attention layers 0–1",
			Statement: "Attention layers 0–1 gather the name's tokens onto its final token",
			Paper:     "token concatenation by attention layers 0–1; mean-ablating attention layer 0 or 1 is catastrophic (Pythia 2.8B)"},
		{ID: ClaimFFProbe, Study: StudyFactFinding, Source: sourceFF2, Short: "sport linearly readable by a middle layer", Cite: "Nanda et al. 2023, post 2", Figure: "≈90% at layer 6/32",
			Statement:  "The sport is linearly readable at the final name token by a middle layer",
			Paper:      "probe accuracy ≈ 90% at layer 6 of 32 (depth 0.19), plateau from about layer 8, Pythia 2.8B",
			PaperValue: num(0.90)},
		{ID: ClaimFFNoANDGate, Study: StudyFactFinding, Source: sourceFF1, Short: "no single neuron is a clean AND gate", Cite: "Nanda et al. 2023, post 1", Figure: "falsified (qualitative)",
			Statement: "No single neuron is a clean AND gate of the raw name tokens that carries the fact (single-step detokenization is falsified)",
			Paper:     "falsified by path patching (MLP layers compose) and by the neurons feeding the probe being non-linear already before GELU, Pythia 2.8B"},
		{ID: ClaimFFCounterfactual, Study: StudyFactFinding, Source: sourceFF2, Short: "counterfactual names leave part unexplained", Cite: "Nanda et al. 2023, post 2", Figure: "significant part (qualitative)",
			Statement: "Counterfactual names ('Michael Smith', 'John Jordan') do not account for the whole effect of the true name ('Michael Jordan')",
			Paper:     "a significant component of the true name's effect is not captured by the averages over counterfactual first and last names, Pythia 2.8B"},

		{ID: ClaimSupUnderdetermined, Study: StudySuperposition, Source: sourceFF1, Short: "fewer facts than lookup neurons", Cite: "Nanda et al. 2023, post 1", Figure: "1,500 facts / ≈50,000 neurons",
			Statement:  "The lookup MLPs have far more neurons than the facts they are known to store, so the lookup is under-determined",
			Paper:      "≈50,000 neurons in MLPs 2–6 vs 1,500 athletes (≈0.03 facts per neuron), Pythia 2.8B",
			PaperValue: num(0.03)},
		{ID: ClaimSupSAEL0, Study: StudySuperposition, Source: sourceSAE, Short: "30–100 active features per token", Cite: "as quoted (unverified)", Figure: "30–100",
			Statement:  "A token's activation is a sparse sum of 30–100 active features at a time",
			Paper:      "30–100 active features per token",
			PaperValue: nil},
		{ID: ClaimSupSharedANDs, Study: StudySuperposition, Source: sourceUAND, Short: "AND neurons shared across facts", Cite: "Hänni et al. 2024", Figure: "many ANDs per neuron",
			Statement: "In computation in superposition each neuron takes part in many AND gates and each AND is spread over several neurons",
			Paper:     "U-AND construction: every neuron reads a random subset of features, so each neuron serves many pairs and each pair is read off several neurons"},
		{ID: ClaimSupToy, Study: StudySuperposition, Source: sourceUAND, Short: "more facts (ANDs) than neurons", Cite: "Hänni et al. 2024", Figure: "Õ(m^(2/3)) neurons for C(m,2) ANDs",
			Statement: "An MLP can compute more ANDs (here: facts keyed by a first AND a last name) than it has neurons",
			Paper:     "all C(m, 2) pairwise ANDs of m features with Õ(m^(2/3)) neurons, i.e. many ANDs per neuron"},

		{ID: ClaimSPName, Study: StudySparseProbing, Source: sourceSP, Short: "multi-token names: sparse combinations early", Cite: "Gurnee et al. 2023", Figure: "single compound neuron F1 0.993",
			Statement: "Early layers detect multi-token words with sparse combinations of neurons (superposition); single neurons suffice only for some specific compounds",
			Paper:     "early layers of 7 Pythia models use sparse combinations of neurons for n-grams and compound words (abstract); single-compound neurons in layers 1–3 of Pythia-160M: 'social security' L2N880 F1 0.993, 'prime factors' L1N1611 F1 0.997"},
		{ID: ClaimSPSport, Study: StudySparseProbing, Source: sourceSP, Short: "facts are not single neurons", Cite: "Gurnee et al. 2023", Figure: "best single neuron F1 ≈ 0.40",
			Statement:  "Facts about entities are not carried by single neurons: the best single neuron is a poor probe and more neurons help",
			Paper:      "best single neuron for occupation 'basketball player' F1 ≈ 0.40 (Pythia-1B L10N2680), against ≈ 0.93 for gender",
			PaperValue: num(0.40)},
	}
}

// claim returns the published claim with the given ID.
func claim(id string) Claim {
	for _, c := range Claims() {
		if c.ID == id {
			return c
		}
	}
	return Claim{ID: id, Statement: "unknown claim " + id}
}

// verdict builds a Verdict.
func verdict(s Status, rule, format string, args ...any) Verdict {
	return Verdict{Status: s, Text: string(s) + ": " + fmt.Sprintf(format, args...), Rule: rule}
}

// countVerdict is the verdict when there are too few facts for a rule, or
// ok=false when there are enough. known is how many facts the model knows
// of total; minimum is what the rule needs.
func countVerdict(rule string, known, total, minimum int, what string) (Verdict, bool) {
	switch {
	case known == 0:
		return verdict(NotFound, rule, "the model knows 0 of %d %s", total, what), true
	case known < minimum:
		return verdict(Inconclusive, rule, "n too small: the model knows %d of %d %s; the rule needs at least %d", known, total, what, minimum), true
	}
	return Verdict{}, false
}
