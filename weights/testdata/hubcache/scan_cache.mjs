// Lists a Hugging Face hub cache with @huggingface/hub's scanCacheDir, the
// JavaScript port of huggingface_hub's scan_cache_dir, as JSON on stdout.
// Used by TestCacheReadByHuggingfaceJS to check that a cache written by the
// Go client is understood by an independent implementation.
//
// Setup (npm registry):   npm install --prefix /tmp/hfjs @huggingface/hub@2.17.5
// Run by the Go test:     FACTLENS_HFJS=/tmp/hfjs go test -run TestCacheReadByHuggingfaceJS ./weights/
// By hand:                FACTLENS_HFJS=/tmp/hfjs node scan_cache.mjs <cache dir>
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.FACTLENS_HFJS, "package.json"));
const { scanCacheDir } = require("@huggingface/hub");

const result = await scanCacheDir(process.argv[2]);
const repos = result.repos.map((repo) => ({
  id: repo.id.name,
  type: repo.id.type,
  revisions: repo.revisions
    .map((rev) => ({
      commit: rev.commitOid,
      refs: [...rev.refs].sort(),
      files: rev.files
        .map((f) => ({ name: path.basename(f.path), blob: path.basename(f.blob.path), size: f.blob.size }))
        .sort((a, b) => a.name.localeCompare(b.name)),
    }))
    .sort((a, b) => a.commit.localeCompare(b.commit)),
}));
console.log(JSON.stringify({ repos, warnings: result.warnings.map(String) }));
