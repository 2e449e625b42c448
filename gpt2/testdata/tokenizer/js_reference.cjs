// Reference (b) for gpt2/tokenizer*.go: adds the ids of two npm GPT-2 tokenizers
// to the case files written by gen_cases.py, and prints where they disagree
// with reference (a).
//
//   js_tiktoken:         js-tiktoken 1.0.21, getEncoding("gpt2").encode(text, [], [])
//                        (<|endoftext|> as plain text); js_tiktoken_special uses
//                        allowedSpecial "all".
//   gpt3_encoder:        gpt-3-encoder 1.1.4, encode(text) (a JavaScript port of
//                        encoder.py; same vocab/merges files as ../shared/data).
//   js: "agree"          (random.json only) all of the above equal reference (a).
//
// Inputs that are not valid UTF-8 ("hex" cases) are skipped: a JavaScript string
// cannot hold them.
//
// Exact commands (see generate.sh):
//   d=$(mktemp -d) && (cd "$d" && npm init -y >/dev/null &&
//       npm install js-tiktoken@1.0.21 gpt-3-encoder@1.1.4)
//   NODE_PATH="$d/node_modules" node js_reference.cjs cases.json random.json toy/cases.json

"use strict";
const fs = require("fs");
const { getEncoding } = require("js-tiktoken");
const gpt3 = require("gpt-3-encoder");

const EOT = "<|endoftext|>";
const tik = getEncoding("gpt2");

function same(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function writeCases(path, obj) {
  const head = Object.entries(obj)
    .filter(([k]) => k !== "cases")
    .map(([k, v]) => ` ${JSON.stringify(k)}: ${asciiJSON(v)},\n`)
    .join("");
  const body = obj.cases.map((c) => "  " + asciiJSON(c)).join(",\n");
  fs.writeFileSync(path + ".tmp", "{\n" + head + ' "cases": [\n' + body + "\n ]\n}\n");
  fs.renameSync(path + ".tmp", path);
}

// Python's json.dumps(ensure_ascii=True) layout, so both writers give one format.
function asciiJSON(v) {
  if (Array.isArray(v)) return "[" + v.map(asciiJSON).join(", ") + "]";
  if (v !== null && typeof v === "object") {
    return "{" + Object.entries(v).map(([k, x]) => asciiJSON(k) + ": " + asciiJSON(x)).join(", ") + "}";
  }
  return JSON.stringify(v).replace(/[\u007f-\uffff]/g,
    (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

for (const path of process.argv.slice(2)) {
  const obj = JSON.parse(fs.readFileSync(path, "utf8"));
  const toy = path.includes("toy");
  const compact = path.endsWith("random.json");
  obj.reference_b = "js_reference.cjs: js-tiktoken 1.0.21 (gpt2), gpt-3-encoder 1.1.4, node " +
    process.version;
  let n = 0, dTik = 0, dG3 = 0, dSpec = 0;
  for (const c of obj.cases) {
    if (c.text === undefined || toy) continue;
    n++;
    c.js_tiktoken = Array.from(tik.encode(c.text, [], []));
    c.gpt3_encoder = gpt3.encode(c.text);
    if (!same(c.js_tiktoken, c.python)) {
      dTik++;
      console.log(`${path}: js-tiktoken differs: ${c.name}: ${JSON.stringify(c.text)}`);
    }
    if (!same(c.gpt3_encoder, c.python)) {
      dG3++;
      console.log(`${path}: gpt-3-encoder differs: ${c.name}: ${JSON.stringify(c.text)}`);
    }
    if (c.python_special !== undefined) {
      c.js_tiktoken_special = Array.from(tik.encode(c.text, "all"));
      if (!same(c.js_tiktoken_special, c.python_special)) {
        dSpec++;
        console.log(`${path}: js-tiktoken special differs: ${c.name}`);
      }
    }
    // random.json is large: there, ids equal to reference (a)'s are written as
    // "js": "agree" instead of three more copies.
    if (compact && same(c.js_tiktoken, c.python) && same(c.gpt3_encoder, c.python) &&
        (c.python_special === undefined || same(c.js_tiktoken_special, c.python_special))) {
      delete c.js_tiktoken;
      delete c.gpt3_encoder;
      delete c.js_tiktoken_special;
      c.js = "agree";
    }
  }
  if (!toy) writeCases(path, obj);
  console.log(`${path}: ${n} text cases; js-tiktoken differs on ${dTik}, ` +
    `gpt-3-encoder on ${dG3}, special on ${dSpec}`);
}
