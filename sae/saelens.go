package sae

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/factlens/factlens/weights"
)

// File names of an SAELens SAE folder (sae_lens/constants.py).
const (
	CfgFile            = "cfg.json"
	WeightsFile        = "sae_weights.safetensors"
	SparsityFile       = "sparsity.safetensors"
	ActivationScaler   = "activation_scaler.json"
	formatVersionSaved = "6.0.0"
)

// Save writes the SAE as an SAELens 6 folder: cfg.json (nested metadata),
// sae_weights.safetensors (W_enc, W_dec, b_enc, b_dec and, for JumpReLU,
// threshold) and, when LogSparsity is set, sparsity.safetensors. Each file is
// written to a temporary file in dir and renamed into place.
//
// cfg.json carries metadata.sae_lens_version "6.0.0": SAELens reads the
// layout by that number (a cfg without one is converted as pre-6), so it
// names the format, not the program that wrote it.
func (s *SAE) Save(dir string) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("sae: save: %w", err)
	}
	c := s.Config
	tensors := []weights.Tensor{
		{Name: "W_enc", Shape: []int{c.DIn, c.DSAE}, Data: s.WEnc},
		{Name: "b_enc", Shape: []int{c.DSAE}, Data: s.BEnc},
		{Name: "W_dec", Shape: []int{c.DSAE, c.DIn}, Data: s.WDec},
		{Name: "b_dec", Shape: []int{c.DIn}, Data: s.BDec},
	}
	if c.Architecture == JumpReLU {
		tensors = append(tensors, weights.Tensor{Name: "threshold", Shape: []int{c.DSAE}, Data: s.Threshold})
	}
	if err := weights.WriteSafetensors(filepath.Join(dir, WeightsFile), tensors, nil); err != nil {
		return fmt.Errorf("sae: save: %w", err)
	}
	if s.LogSparsity != nil {
		if len(s.LogSparsity) != c.DSAE {
			return fmt.Errorf("sae: save: log sparsity has %d values, d_sae is %d", len(s.LogSparsity), c.DSAE)
		}
		sp := []weights.Tensor{{Name: "sparsity", Shape: []int{c.DSAE}, Data: s.LogSparsity}}
		if err := weights.WriteSafetensors(filepath.Join(dir, SparsityFile), sp, nil); err != nil {
			return fmt.Errorf("sae: save: %w", err)
		}
	}
	if c.Normalization == NormExpectedAverageOnlyIn {
		b, _ := json.Marshal(map[string]float64{"scaling_factor": c.NormScalingFactor})
		if err := weights.WriteFileBytesAtomic(filepath.Join(dir, ActivationScaler), b); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(c.toJSON(), "", "  ")
	if err != nil {
		return fmt.Errorf("sae: save: %w", err)
	}
	return weights.WriteFileBytesAtomic(filepath.Join(dir, CfgFile), append(b, '\n'))
}

// cfgJSON is cfg.json as SAELens 6 writes it.
type cfgJSON struct {
	DIn                  int          `json:"d_in"`
	DSAE                 int          `json:"d_sae"`
	DType                string       `json:"dtype"`
	Device               string       `json:"device"`
	ApplyBDecToInput     bool         `json:"apply_b_dec_to_input"`
	NormalizeActivations string       `json:"normalize_activations"`
	ReshapeActivations   string       `json:"reshape_activations"`
	Architecture         Architecture `json:"architecture"`
	K                    *int         `json:"k,omitempty"`
	Metadata             metaJSON     `json:"metadata"`
}

type metaJSON struct {
	ModelName                 string         `json:"model_name"`
	HookName                  string         `json:"hook_name"`
	HookHeadIndex             *int           `json:"hook_head_index"`
	ContextSize               *int           `json:"context_size"`
	PrependBOS                bool           `json:"prepend_bos"`
	DatasetPath               *string        `json:"dataset_path"`
	ModelFromPretrainedKwargs map[string]any `json:"model_from_pretrained_kwargs"`
	NeuronpediaID             *string        `json:"neuronpedia_id"`
	SAELensVersion            string         `json:"sae_lens_version"`
}

func (c Config) toJSON() cfgJSON {
	orNil := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	j := cfgJSON{
		DIn: c.DIn, DSAE: c.DSAE, DType: c.DType, Device: c.Device,
		ApplyBDecToInput: c.ApplyBDecToInput, NormalizeActivations: c.Normalization,
		ReshapeActivations: c.ReshapeActivations, Architecture: c.Architecture,
		Metadata: metaJSON{
			ModelName: c.Metadata.ModelName, HookName: c.Metadata.HookName,
			HookHeadIndex: c.Metadata.HookHeadIndex, PrependBOS: c.Metadata.PrependBOS,
			DatasetPath: orNil(c.Metadata.DatasetPath), NeuronpediaID: orNil(c.Metadata.NeuronpediaID),
			ModelFromPretrainedKwargs: c.Metadata.ModelFromPretrainedKwargs,
			SAELensVersion:            formatVersionSaved,
		},
	}
	if j.DType == "" {
		j.DType = "float32"
	}
	if j.Device == "" {
		j.Device = "cpu"
	}
	if j.NormalizeActivations == "" {
		j.NormalizeActivations = NormNone
	}
	if j.ReshapeActivations == "" {
		j.ReshapeActivations = "none"
	}
	if c.Metadata.ContextSize > 0 {
		cs := c.Metadata.ContextSize
		j.Metadata.ContextSize = &cs
	}
	if j.Metadata.ModelFromPretrainedKwargs == nil {
		j.Metadata.ModelFromPretrainedKwargs = c.RequiresProcessing.Kwargs()
	}
	if c.Architecture == TopK {
		k := c.K
		j.K = &k
	}
	return j
}

// LoadOption adjusts Load and LoadPretrained.
type LoadOption func(*loadSettings)

type loadSettings struct {
	normScalingFactor float64
	processing        *Processing
	revision          string
}

// WithNormScalingFactor supplies the factor of an expected_average_only_in
// SAE whose folder does not carry it (SAELens keeps it in
// pretrained_saes.yaml); it is folded into the weights.
func WithNormScalingFactor(f float64) LoadOption {
	return func(s *loadSettings) { s.normScalingFactor = f }
}

// WithProcessing states the model processing the SAE expects when its cfg
// does not say (it overrides what the cfg says).
func WithProcessing(p Processing) LoadOption {
	return func(s *loadSettings) { p.Known = true; s.processing = &p }
}

// WithRevision picks the Hub revision for LoadPretrained (default "main").
func WithRevision(rev string) LoadOption {
	return func(s *loadSettings) { s.revision = rev }
}

// Load reads an SAELens SAE folder of any vintage — SAELens 6 (nested
// metadata), SAELens 5 (flat, hook_name/hook_layer) or older (hook_point,
// activation_fn_str, boolean normalize_activations) — checks every tensor's
// shape against the cfg, and folds a known expected_average_only_in factor
// into the weights.
func Load(dir string, opts ...LoadOption) (*SAE, error) {
	var ls loadSettings
	for _, o := range opts {
		o(&ls)
	}
	return loadDir(dir, ls, 0)
}

func loadDir(dir string, ls loadSettings, tableFactor float64) (*SAE, error) {
	raw, err := os.ReadFile(filepath.Join(dir, CfgFile))
	if err != nil {
		return nil, fmt.Errorf("sae: %w", err)
	}
	cfg, vintage, err := ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("sae: %s: %w", filepath.Join(dir, CfgFile), err)
	}
	if ls.processing != nil {
		cfg.RequiresProcessing = *ls.processing
	}
	if cfg.Normalization == NormExpectedAverageOnlyIn {
		switch {
		case ls.normScalingFactor > 0:
			cfg.NormScalingFactor = ls.normScalingFactor
		case tableFactor > 0:
			cfg.NormScalingFactor = tableFactor
		default:
			if f, ok, err := readScaler(dir); err != nil {
				return nil, err
			} else if ok {
				cfg.NormScalingFactor = f
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w (%s)", err, filepath.Join(dir, CfgFile))
	}
	s := &SAE{Config: cfg, Origin: Origin{Dir: dir, Vintage: vintage}}
	if err := s.readWeights(filepath.Join(dir, WeightsFile)); err != nil {
		return nil, err
	}
	if sp, err := readOptionalTensor(filepath.Join(dir, SparsityFile), "sparsity", cfg.DSAE); err != nil {
		return nil, err
	} else {
		s.LogSparsity = sp
	}
	if s.Config.Normalization == NormExpectedAverageOnlyIn {
		s.FoldNormScalingFactor(s.Config.NormScalingFactor)
	}
	return s, nil
}

func readScaler(dir string) (float64, bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, ActivationScaler))
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("sae: %w", err)
	}
	var v struct {
		ScalingFactor *float64 `json:"scaling_factor"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return 0, false, fmt.Errorf("sae: %s: %w", filepath.Join(dir, ActivationScaler), err)
	}
	if v.ScalingFactor == nil {
		return 0, false, nil
	}
	return *v.ScalingFactor, true, nil
}

func (s *SAE) readWeights(path string) error {
	f, err := weights.OpenSafetensors(path)
	if err != nil {
		return fmt.Errorf("sae: %w", err)
	}
	defer f.Close()
	c := s.Config
	get := func(name string, shape ...int) ([]float32, error) {
		info, ok := f.Info(name)
		if !ok {
			return nil, fmt.Errorf("sae: %s: no tensor %q", path, name)
		}
		if !equalShape(info.Shape, shape) {
			return nil, fmt.Errorf("sae: %s: %s has shape %v, cfg (d_in %d, d_sae %d) wants %v", path, name, info.Shape, c.DIn, c.DSAE, shape)
		}
		v, err := f.Float32(name)
		if err != nil {
			return nil, fmt.Errorf("sae: %w", err)
		}
		// F32 tensors are views of the read-only mapping, closed on return.
		return append([]float32(nil), v...), nil
	}
	if s.WEnc, err = get("W_enc", c.DIn, c.DSAE); err != nil {
		return err
	}
	if s.BEnc, err = get("b_enc", c.DSAE); err != nil {
		return err
	}
	if s.WDec, err = get("W_dec", c.DSAE, c.DIn); err != nil {
		return err
	}
	if s.BDec, err = get("b_dec", c.DIn); err != nil {
		return err
	}
	if c.Architecture == JumpReLU {
		if _, ok := f.Info("threshold"); ok {
			if s.Threshold, err = get("threshold", c.DSAE); err != nil {
				return err
			}
		} else if _, ok := f.Info("log_threshold"); ok {
			// Training checkpoints store log_threshold.
			lt, err := get("log_threshold", c.DSAE)
			if err != nil {
				return err
			}
			for i, v := range lt {
				lt[i] = float32(math.Exp(float64(v)))
			}
			s.Threshold = lt
		} else {
			return fmt.Errorf("sae: %s: jumprelu SAE has no threshold tensor", path)
		}
	}
	// Old files carry scaling_factor (SAELens' finetuning_scaling_factor): it
	// multiplies the activations before decoding, so it folds into W_dec's
	// rows. All ones (the common case) changes nothing.
	if _, ok := f.Info("scaling_factor"); ok {
		sf, err := get("scaling_factor", c.DSAE)
		if err != nil {
			return err
		}
		for j, v := range sf {
			if v != 1 {
				row := s.WDec[j*c.DIn : (j+1)*c.DIn]
				for i := range row {
					row[i] *= v
				}
			}
		}
	}
	return nil
}

func readOptionalTensor(path, name string, n int) ([]float32, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	f, err := weights.OpenSafetensors(path)
	if err != nil {
		return nil, fmt.Errorf("sae: %w", err)
	}
	defer f.Close()
	info, ok := f.Info(name)
	if !ok {
		return nil, fmt.Errorf("sae: %s: no tensor %q", path, name)
	}
	if info.NumElements() != n {
		return nil, fmt.Errorf("sae: %s: %s has shape %v, want [%d]", path, name, info.Shape, n)
	}
	v, err := f.Float32(name)
	if err != nil {
		return nil, fmt.Errorf("sae: %w", err)
	}
	return append([]float32(nil), v...), nil
}

func equalShape(got []int, want []int) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// ParseConfig reads cfg.json of any SAELens vintage into a Config and names
// the vintage: "saelens6" (nested metadata, sae_lens_version ≥ 6),
// "saelens5" (flat, hook_name) or "pre5" (flat, hook_point). The renames
// follow SAELens' handle_pre_6_0_config; in addition, in the older vintages
// an activation_fn of "topk" selects the TopK architecture with
// activation_fn_kwargs.k, as SAELens 5 ran it (SAELens 6's converter keeps
// such a cfg "standard", which would be a ReLU SAE).
func ParseConfig(raw []byte) (Config, string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var top map[string]any
	if err := dec.Decode(&top); err != nil {
		return Config{}, "", fmt.Errorf("cfg.json is not a JSON object: %w", err)
	}
	var c Config
	f := fields(top)
	meta := f
	vintage := "pre5"
	if m, ok := top["metadata"].(map[string]any); ok {
		meta, vintage = fields(m), "saelens6"
	} else if m, ok := top["meta"].(map[string]any); ok {
		// SAELens 6 release candidates wrote "meta".
		meta, vintage = fields(m), "saelens6"
	} else if _, ok := top["hook_name"]; ok {
		vintage = "saelens5"
	}

	var err error
	get := func(fn func() error) {
		if err == nil {
			err = fn()
		}
	}
	get(func() (e error) { c.DIn, e = f.requiredInt("d_in"); return })
	get(func() error {
		if _, ok := f["d_sae"]; ok {
			v, e := f.requiredInt("d_sae")
			c.DSAE = v
			return e
		}
		// Early cfgs gave only expansion_factor.
		ef, ok, e := f.optFloat("expansion_factor")
		if e != nil {
			return e
		}
		if !ok {
			return errors.New("missing field d_sae (and no expansion_factor)")
		}
		c.DSAE = int(math.Round(ef * float64(c.DIn)))
		return nil
	})
	if err != nil {
		return Config{}, vintage, err
	}
	c.DType, _ = f.str("dtype")
	c.Device, _ = f.str("device")
	c.ApplyBDecToInput = true
	if v, ok, e := f.optBool("apply_b_dec_to_input"); e != nil {
		return Config{}, vintage, e
	} else if ok {
		c.ApplyBDecToInput = v
	}

	// Architecture: before SAELens 6 the activation function chose TopK
	// (architecture "standard" with activation_fn_str "topk", as in the
	// converted OpenAI v5 SAEs); SAELens 6 has only the architecture field.
	arch, _ := f.str("architecture")
	act, _ := f.str("activation_fn_str")
	if act == "" {
		act, _ = f.str("activation_fn")
	}
	if vintage != "saelens6" {
		switch act {
		case "", "relu":
		case "topk":
			if arch == "" || arch == string(Standard) {
				arch = string(TopK)
			}
		default:
			return Config{}, vintage, fmt.Errorf("activation_fn %q is not supported (know relu, topk)", act)
		}
	}
	if arch == "" {
		arch = string(Standard)
	}
	c.Architecture = Architecture(arch)
	if c.Architecture == "batchtopk" {
		// SAELens saves BatchTopK SAEs as JumpReLU for inference; a cfg that
		// still says batchtopk has no per-latent threshold to run with.
		return Config{}, vintage, errors.New("architecture batchtopk: SAELens converts these to jumprelu for inference; load the converted folder")
	}
	if c.Architecture == TopK {
		k, ok, e := f.optInt("k")
		if e != nil {
			return Config{}, vintage, e
		}
		if !ok {
			if kw, isMap := top["activation_fn_kwargs"].(map[string]any); isMap {
				k, ok, e = fields(kw).optInt("k")
				if e != nil {
					return Config{}, vintage, fmt.Errorf("activation_fn_kwargs: %w", e)
				}
			}
		}
		if !ok {
			return Config{}, vintage, errors.New("topk SAE without k (neither k nor activation_fn_kwargs.k)")
		}
		c.K = k
	}

	switch v := top["normalize_activations"].(type) {
	case nil:
		c.Normalization = NormNone
	case bool:
		// Before SAELens 3 this was a flag for what became
		// expected_average_only_in.
		c.Normalization = NormNone
		if v {
			c.Normalization = NormExpectedAverageOnlyIn
		}
	case string:
		c.Normalization = v
	default:
		return Config{}, vintage, fmt.Errorf("normalize_activations has unexpected value %v", v)
	}
	c.ReshapeActivations, _ = f.str("reshape_activations")
	if c.ReshapeActivations == "" {
		c.ReshapeActivations = "none"
	}

	// Metadata, from the nested block or the flat cfg.
	md := &c.Metadata
	md.ModelName, _ = meta.str("model_name")
	md.HookName, _ = meta.str("hook_name")
	if md.HookName == "" {
		md.HookName, _ = meta.str("hook_point")
	}
	if md.HookName == "" {
		return Config{}, vintage, errors.New("missing field hook_name (or hook_point)")
	}
	for _, k := range []string{"hook_head_index", "hook_point_head_index"} {
		if v, ok, e := meta.optInt(k); e != nil {
			return Config{}, vintage, e
		} else if ok {
			md.HookHeadIndex = &v
			break
		}
	}
	if v, ok, e := meta.optInt("context_size"); e != nil {
		return Config{}, vintage, e
	} else if ok {
		md.ContextSize = v
	}
	md.PrependBOS = true
	if v, ok, e := meta.optBool("prepend_bos"); e != nil {
		return Config{}, vintage, e
	} else if ok {
		md.PrependBOS = v
	}
	md.DatasetPath, _ = meta.str("dataset_path")
	md.NeuronpediaID, _ = meta.str("neuronpedia_id")
	md.SAELensVersion, _ = meta.str("sae_lens_version")
	if md.SAELensVersion == "" {
		md.SAELensVersion, _ = f.str("sae_lens_version")
	}
	if vintage == "saelens6" && md.SAELensVersion != "" && majorVersion(md.SAELensVersion) < 6 {
		return Config{}, vintage, fmt.Errorf("cfg has a metadata block but sae_lens_version %q", md.SAELensVersion)
	}
	if kw, ok := meta["model_from_pretrained_kwargs"].(map[string]any); ok {
		md.ModelFromPretrainedKwargs = normalizeNumbers(kw).(map[string]any)
		c.RequiresProcessing = ProcessingFromKwargs(md.ModelFromPretrainedKwargs)
	}
	return c, vintage, nil
}

func majorVersion(v string) int {
	head, _, _ := strings.Cut(strings.TrimPrefix(v, "v"), ".")
	n, err := strconv.Atoi(head)
	if err != nil {
		return -1
	}
	return n
}

// normalizeNumbers turns json.Number values into float64 (or int64 when
// integral) so that kwargs round-trip as ordinary JSON.
func normalizeNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalizeNumbers(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalizeNumbers(e)
		}
		return out
	}
	return v
}

// fields reads typed values out of a decoded JSON object (numbers as
// json.Number).
type fields map[string]any

func (f fields) str(k string) (string, bool) {
	s, ok := f[k].(string)
	return s, ok
}

func (f fields) requiredInt(k string) (int, error) {
	v, ok, err := f.optInt(k)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("missing field %s", k)
	}
	return v, nil
}

func (f fields) optInt(k string) (int, bool, error) {
	raw, ok := f[k]
	if !ok || raw == nil {
		return 0, false, nil
	}
	n, isNum := raw.(json.Number)
	if !isNum {
		return 0, false, fmt.Errorf("field %s is %v, want an integer", k, raw)
	}
	if i, err := n.Int64(); err == nil {
		return int(i), true, nil
	}
	fl, err := n.Float64()
	if err != nil || fl != math.Trunc(fl) {
		return 0, false, fmt.Errorf("field %s is %v, want an integer", k, raw)
	}
	return int(fl), true, nil
}

func (f fields) optFloat(k string) (float64, bool, error) {
	raw, ok := f[k]
	if !ok || raw == nil {
		return 0, false, nil
	}
	n, isNum := raw.(json.Number)
	if !isNum {
		return 0, false, fmt.Errorf("field %s is %v, want a number", k, raw)
	}
	v, err := n.Float64()
	return v, err == nil, err
}

func (f fields) optBool(k string) (bool, bool, error) {
	raw, ok := f[k]
	if !ok || raw == nil {
		return false, false, nil
	}
	b, isBool := raw.(bool)
	if !isBool {
		return false, false, fmt.Errorf("field %s is %v, want true or false", k, raw)
	}
	return b, true, nil
}
