package gpt2

import (
	"unicode"
	"unicode/utf8"
)

// GPT-2 splits text into pieces with the Python `regex` pattern
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// before running BPE on each piece. Go's RE2 has no lookahead, and
// regexp-based ports that drop `\s+(?!\S)` split whitespace differently, so
// pretokNext is a hand-written scanner with the same leftmost-first,
// backtracking semantics as that pattern under the `regex` module.
//
// Character classes follow the `regex` module (checked code point by code point
// against Debian's regex 2022.10.31 in testdata/tokenizer/classes.json):
//   - \s is exactly Unicode White_Space (25 code points): U+0009–U+000D, U+0020,
//     U+0085, U+00A0, U+1680, U+2000–U+200A, U+2028, U+2029, U+202F, U+205F,
//     U+3000. U+001C–U+001F (str.isspace in Python), U+180E, U+200B and U+FEFF
//     are not \s. JavaScript's \s differs on two of these (it has U+FEFF, lacks
//     U+0085), which is where js-tiktoken and gpt-3-encoder disagree with GPT-2.
//   - \p{L} and \p{N} are the general categories L* and N* (Go's unicode
//     tables, Unicode 15.0, the same version as that regex release).
//
// Invalid UTF-8: a Python str cannot hold it, so GPT-2's own code never saw it.
// Each byte that does not start a valid UTF-8 sequence is treated as one
// character that is neither \s, \p{L} nor \p{N} — what Python gives for
// bytes.decode("utf-8", "surrogateescape"), where such a byte becomes a lone
// surrogate (category Cs). It therefore joins runs of punctuation, can take a
// leading space, and its byte is encoded by its byte-level token, so encoding
// stays lossless. (tiktoken's _encode_bytes instead runs BPE over everything
// from the last valid piece to the end of the input as a single piece; that is
// a guess for truncated input that turns one stray byte in a long document
// into one huge piece.)

// pretokClass is the class of one character for the GPT-2 pattern.
type pretokClass uint8

const (
	pretokOther  pretokClass = iota // [^\s\p{L}\p{N}], including invalid bytes
	pretokLetter                    // \p{L}
	pretokNumber                    // \p{N}
	pretokSpace                     // \s
)

// pretokASCII holds the class of every ASCII byte.
var pretokASCII = func() (t [utf8.RuneSelf]pretokClass) {
	for b := 0; b < utf8.RuneSelf; b++ {
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z':
			t[b] = pretokLetter
		case '0' <= b && b <= '9':
			t[b] = pretokNumber
		case b == ' ', '\t' <= b && b <= '\r':
			t[b] = pretokSpace
		default:
			t[b] = pretokOther
		}
	}
	return t
}()

// pretokIsSpace reports whether r is in Unicode's White_Space property, which
// is what the regex module's \s matches in a str pattern.
func pretokIsSpace(r rune) bool {
	switch {
	case r < utf8.RuneSelf:
		return pretokASCII[r] == pretokSpace
	case r == 0x85, r == 0xA0, r == 0x1680, 0x2000 <= r && r <= 0x200A,
		r == 0x2028, r == 0x2029, r == 0x202F, r == 0x205F, r == 0x3000:
		return true
	}
	return false
}

// pretokRuneClass classifies a decoded rune.
func pretokRuneClass(r rune) pretokClass {
	switch {
	case r < utf8.RuneSelf:
		return pretokASCII[r]
	case pretokIsSpace(r):
		return pretokSpace
	case unicode.IsLetter(r):
		return pretokLetter
	case unicode.IsNumber(r):
		return pretokNumber
	}
	return pretokOther
}

// pretokAt returns the class and byte width of the character starting at s[i].
// A byte that does not start valid UTF-8 is one pretokOther character of width 1.
func pretokAt(s string, i int) (pretokClass, int) {
	if b := s[i]; b < utf8.RuneSelf {
		return pretokASCII[b], 1
	}
	r, n := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError && n == 1 {
		return pretokOther, 1
	}
	return pretokRuneClass(r), n
}

// pretokContraction returns the end of a contraction ('s 't 're 've 'm 'll 'd,
// lowercase only, as in the pattern) starting at s[i], or 0 if there is none.
func pretokContraction(s string, i int) int {
	if i+1 >= len(s) {
		return 0
	}
	switch s[i+1] {
	case 's', 't', 'm', 'd':
		return i + 2
	case 'r', 'v':
		if i+2 < len(s) && s[i+2] == 'e' {
			return i + 3
		}
	case 'l':
		if i+2 < len(s) && s[i+2] == 'l' {
			return i + 3
		}
	}
	return 0
}

// pretokRun returns the end of the run of characters of class c starting at s[i].
func pretokRun(s string, i int, c pretokClass) int {
	for i < len(s) {
		if b := s[i]; b < utf8.RuneSelf {
			if pretokASCII[b] != c {
				return i
			}
			i++
			continue
		}
		cc, n := pretokAt(s, i)
		if cc != c {
			return i
		}
		i += n
	}
	return i
}

// pretokNext returns the end of the piece that starts at s[i] (i < len(s)).
// Every position starts a match, so pieces tile the whole string.
func pretokNext(s string, i int) int {
	c, n := pretokAt(s, i)
	switch c {
	case pretokLetter, pretokNumber:
		return pretokRun(s, i+n, c)
	case pretokOther:
		if s[i] == '\'' {
			if end := pretokContraction(s, i); end > 0 {
				return end
			}
		}
		return pretokRun(s, i+n, c)
	}
	// Whitespace. A space followed by a non-space character starts a
	// " ?\p{L}+", " ?\p{N}+" or " ?[^\s\p{L}\p{N}]+" match, whichever the next
	// character's class selects.
	if s[i] == ' ' && i+1 < len(s) {
		if c2, n2 := pretokAt(s, i+1); c2 != pretokSpace {
			return pretokRun(s, i+1+n2, c2)
		}
	}
	// \s+(?!\S): the whole run if it ends the text; otherwise backtrack by one
	// character so the run stops before a whitespace character, which needs a
	// run of at least two. A single whitespace character before a non-space
	// falls through to the final \s+.
	last, j, count := i, i+n, 1
	for j < len(s) {
		cc, nn := pretokAt(s, j)
		if cc != pretokSpace {
			break
		}
		last, j, count = j, j+nn, count+1
	}
	if j == len(s) || count == 1 {
		return j
	}
	return last
}
