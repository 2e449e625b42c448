package sae

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/factlens/factlens/weights"
)

// Release is one entry of the small table of pretrained GPT-2 small SAE
// releases this package knows, transcribed from SAELens'
// sae_lens/pretrained_saes.yaml.
type Release struct {
	Name string // SAELens release name
	Repo string // Hugging Face repository
	// Folders maps SAE ids to folders in Repo.
	Folders map[string]string
	// NormScalingFactors holds the yaml's norm_scaling_factor per SAE id, for
	// releases trained with expected_average_only_in.
	NormScalingFactors map[string]float64
	// Processing is the yaml's config_overrides.model_from_pretrained_kwargs
	// (unknown when the yaml gives none).
	Processing Processing
	Notes      string
}

// KnownReleases lists the GPT-2 small releases of the table.
func KnownReleases() []Release {
	resJB := map[string]string{"blocks.11.hook_resid_post": "blocks.11.hook_resid_post"}
	for l := 0; l < 12; l++ {
		id := fmt.Sprintf("blocks.%d.hook_resid_pre", l)
		resJB[id] = id
	}
	// gpt2-small-mlp-tm: folder version suffixes and norm_scaling_factor
	// per layer, as in pretrained_saes.yaml.
	tmVersion := []int{1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 2}
	tmFactor := []float64{1.049317316132615, 2.3693984005104283, 1.6411934982190302, 1.8958522157897557,
		1.81673478700627, 1.550234472245924, 1.3237742807210804, 1.1042905114723296, 0.9123762783479742,
		0.6955335635232373, 0.3619728926727644, 0.2851548652550073}
	tm := map[string]string{}
	tmF := map[string]float64{}
	for l := 0; l < 12; l++ {
		id := fmt.Sprintf("blocks.%d.hook_mlp_out", l)
		tm[id] = fmt.Sprintf("sae_group_gpt2_blocks.%d.hook_mlp_out_24576:v%d", l, tmVersion[l])
		tmF[id] = tmFactor[l]
	}
	fs := map[string]string{}
	for w := 768; w <= 98304; w *= 2 {
		id := fmt.Sprintf("blocks.8.hook_resid_pre_%d", w)
		fs[id] = id
	}
	return []Release{
		{
			Name: "gpt2-small-res-jb", Repo: "jbloom/GPT2-Small-SAEs-Reformatted", Folders: resJB,
			Processing: Processing{Known: true, CenterWritingWeights: true},
			Notes:      "standard ReLU+L1, d_sae 24576, context 128, OpenWebText; pre-5 cfg.json",
		},
		{
			Name: "gpt2-small-mlp-tm", Repo: "tommmcgrath/gpt2-small-mlp-out-saes", Folders: tm,
			NormScalingFactors: tmF,
			Notes:              "standard, d_sae 24576, context 512, expected_average_only_in with the yaml's factors",
		},
		{
			Name: "gpt2-small-res-jb-feature-splitting", Repo: "jbloom/GPT2-Small-Feature-Splitting-Experiment-Layer-8",
			Folders: fs, Notes: "layer-8 resid_pre at widths 768…98304",
		},
	}
}

// FindRelease returns the table entry named name.
func FindRelease(name string) (Release, bool) {
	for _, r := range KnownReleases() {
		if r.Name == name {
			return r, true
		}
	}
	return Release{}, false
}

// LoadPretrained downloads (or finds in the Hub cache) and loads one SAE.
// release is either a release name of KnownReleases, with id an SAE id of it
// ("blocks.8.hook_resid_pre"), or a Hub repository id ("org/name"), with id
// the folder inside it. The table supplies norm_scaling_factor and the
// model processing the SAE expects when its cfg.json does not.
func LoadPretrained(ctx context.Context, hub *weights.Hub, release, id string, opts ...LoadOption) (*SAE, error) {
	var ls loadSettings
	for _, o := range opts {
		o(&ls)
	}
	repo, folder := release, id
	var rel *Release
	if r, ok := FindRelease(release); ok {
		f, ok := r.Folders[id]
		if !ok {
			ids := make([]string, 0, len(r.Folders))
			for k := range r.Folders {
				ids = append(ids, k)
			}
			sort.Strings(ids)
			return nil, fmt.Errorf("sae: release %s has no SAE %q (ids: %s)", release, id, strings.Join(ids, ", "))
		}
		repo, folder, rel = r.Repo, f, &r
	} else if !strings.Contains(release, "/") {
		return nil, fmt.Errorf("sae: %q is neither a known release nor a Hub repository id (org/name)", release)
	}
	folder = strings.Trim(folder, "/")
	file := func(name string) string {
		if folder == "" {
			return name
		}
		return folder + "/" + name
	}
	cfgPath, commit, err := hub.Download(ctx, repo, ls.revision, file(CfgFile))
	if err != nil {
		return nil, fmt.Errorf("sae: %w", err)
	}
	if _, _, err := hub.Download(ctx, repo, commit, file(WeightsFile)); err != nil {
		return nil, fmt.Errorf("sae: %w", err)
	}
	// sparsity.safetensors and activation_scaler.json are optional; offline,
	// a file the cache never saw counts as absent.
	for _, name := range []string{SparsityFile, ActivationScaler} {
		_, _, err := hub.Download(ctx, repo, commit, file(name))
		if err != nil && !errors.Is(err, weights.ErrEntryNotFound) && !errors.Is(err, weights.ErrNotCached) {
			return nil, fmt.Errorf("sae: %w", err)
		}
	}
	var tableFactor float64
	if rel != nil {
		tableFactor = rel.NormScalingFactors[id]
	}
	s, err := loadDir(filepath.Dir(cfgPath), ls, tableFactor)
	if err != nil {
		return nil, err
	}
	if rel != nil && ls.processing == nil && !s.Config.RequiresProcessing.Known && rel.Processing.Known {
		s.Config.RequiresProcessing = rel.Processing
		s.Config.Metadata.ModelFromPretrainedKwargs = map[string]any{"center_writing_weights": rel.Processing.CenterWritingWeights}
	}
	s.Origin.Repo, s.Origin.Folder, s.Origin.Commit = repo, folder, commit
	s.Origin.Revision = ls.revision
	if rel != nil {
		s.Origin.Release = rel.Name
	}
	return s, nil
}
