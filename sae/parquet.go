package sae

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strings"

	// Parquet is a large format (several encodings, compressions, nested
	// schemas, page indexes); parquet-go is a maintained, widely used reader
	// and writing our own would be a project of its own.
	"github.com/parquet-go/parquet-go"
)

// DefaultTextColumn is the column of a Parquet file, and the field of a JSON
// Lines document, that holds the text, as in Hugging Face text datasets.
const DefaultTextColumn = "text"

// hfDatasetFile is a corpus entry naming one file of a Hugging Face dataset
// repository, in the URI form of huggingface_hub's HfFileSystem:
//
//	hf://datasets/ORG/NAME/PATH/IN/REPO
//	hf://datasets/ORG/NAME@REVISION/PATH/IN/REPO
//
// As in HfFileSystem the revision follows the repository id and is
// URL-unquoted, so a branch with a slash is written quoted
// (refs%2Fconvert%2Fparquet); the special refs refs/convert/… and refs/pr/N
// are also accepted unquoted.
type hfDatasetFile struct {
	repo, revision, path string
}

const hfDatasetPrefix = "hf://datasets/"

// hfSpecialRef is HfFileSystem's SPECIAL_REFS_REVISION_REGEX.
var hfSpecialRef = regexp.MustCompile(`^(refs/convert/\w+|refs/pr/\d+)`)

func isHFURI(entry string) bool { return strings.HasPrefix(entry, "hf://") }

func errNoHub(entry string) error {
	return fmt.Errorf("sae: corpus %s: a Hugging Face dataset file needs a Hub client to download it, and none was given", entry)
}

func parseHFURI(entry string) (hfDatasetFile, error) {
	bad := func(why string) (hfDatasetFile, error) {
		return hfDatasetFile{}, fmt.Errorf("sae: corpus %q: %s (want hf://datasets/ORG/NAME[@REVISION]/PATH)", entry, why)
	}
	rest, ok := strings.CutPrefix(entry, hfDatasetPrefix)
	if !ok {
		return bad("only dataset repositories are supported")
	}
	org, rest, _ := strings.Cut(rest, "/")
	var d hfDatasetFile
	name, path, _ := strings.Cut(rest, "/")
	if at := strings.IndexByte(rest, '@'); at >= 0 && at < len(name) {
		name = rest[:at]
		afterAt := rest[at+1:]
		rev := hfSpecialRef.FindString(afterAt)
		if rev != "" && (len(afterAt) == len(rev) || afterAt[len(rev)] == '/') {
			path = strings.TrimPrefix(afterAt[len(rev):], "/")
		} else {
			rev, path, _ = strings.Cut(afterAt, "/")
			unquoted, err := url.PathUnescape(rev)
			if err != nil {
				return bad("bad revision " + rev)
			}
			rev = unquoted
		}
		if rev == "" {
			return bad("empty revision after @")
		}
		d.revision = rev
	}
	switch {
	case org == "" || name == "":
		return bad("no ORG/NAME repository id")
	case path == "":
		return bad("no file path in the repository")
	}
	d.repo, d.path = org+"/"+name, path
	return d, nil
}

// parquetDocs yields the strings of one column of a Parquet file, one
// document per row, reading one row group at a time. Null values are
// skipped.
type parquetDocs struct {
	path    string
	f       *os.File
	pf      *parquet.File
	column  int
	group   int      // next row group to read
	pending []string // texts of the row group being served
}

func openParquetDocs(path, column string) (*parquetDocs, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sae: corpus: %w", err)
	}
	d, err := readParquetSchema(f, path, column)
	if err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

func readParquetSchema(f *os.File, path, column string) (d *parquetDocs, err error) {
	defer recoverParquet(path, &err)
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("sae: corpus: %w", err)
	}
	pf, err := parquet.OpenFile(f, fi.Size(), parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
	if err != nil {
		return nil, fmt.Errorf("sae: corpus %s: not a readable Parquet file: %w", path, err)
	}
	schema := pf.Schema()
	leaf, ok := schema.Lookup(column)
	if !ok {
		var names []string
		for _, c := range schema.Columns() {
			names = append(names, strings.Join(c, "."))
		}
		return nil, fmt.Errorf("sae: corpus %s: no column %q; the file has columns %s", path, column, strings.Join(names, ", "))
	}
	if k := leaf.Node.Type().Kind(); k != parquet.ByteArray || leaf.MaxRepetitionLevel > 0 {
		return nil, fmt.Errorf("sae: corpus %s: column %q holds %s values, not strings", path, column, leaf.Node.Type())
	}
	return &parquetDocs{path: path, f: f, pf: pf, column: leaf.ColumnIndex}, nil
}

// recoverParquet turns a panic inside parquet-go, which a corrupt file can
// cause, into an error naming the file.
func recoverParquet(path string, err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("sae: corpus %s: corrupt Parquet file: %v", path, r)
	}
}

func (d *parquetDocs) close() { d.f.Close() }

func (d *parquetDocs) next() (string, error) {
	for len(d.pending) == 0 {
		groups := d.pf.RowGroups()
		if d.group == len(groups) {
			return "", io.EOF
		}
		texts, err := d.readGroup(groups[d.group])
		if err != nil {
			return "", err
		}
		d.pending = texts
		d.group++
	}
	text := d.pending[0]
	d.pending = d.pending[1:]
	return text, nil
}

func (d *parquetDocs) readGroup(g parquet.RowGroup) (texts []string, err error) {
	defer recoverParquet(d.path, &err)
	fail := func(err error) ([]string, error) {
		return nil, fmt.Errorf("sae: corpus %s: row group %d: %w", d.path, d.group, err)
	}
	pages := g.ColumnChunks()[d.column].Pages()
	defer pages.Close()
	values := make([]parquet.Value, 1024)
	for {
		p, err := pages.ReadPage()
		if errors.Is(err, io.EOF) {
			return texts, nil
		}
		if err != nil {
			return fail(err)
		}
		// ByteArray values point into the page's memory: they are copied
		// into strings before the page is released.
		vr := p.Values()
		for {
			n, err := vr.ReadValues(values)
			for _, v := range values[:n] {
				if !v.IsNull() {
					texts = append(texts, string(v.ByteArray()))
				}
			}
			if errors.Is(err, io.EOF) || (err == nil && n == 0) {
				break
			}
			if err != nil {
				parquet.Release(p)
				return fail(err)
			}
		}
		parquet.Release(p)
	}
}
