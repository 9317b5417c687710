package dataset

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// walk calls fn for each regular file of the dataset (symlinks to files
// included) in lexical order, with its path relative to dir in slash form.
// Hidden files and directories and a top-level README or LICENSE are not part
// of a dataset and are skipped.
func walk(ctx context.Context, dir string, fn func(rel, abs string, d fs.DirEntry) error) error {
	return filepath.WalkDir(dir, func(abs string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if abs == dir {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(dir, abs)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if !strings.Contains(rel, "/") && notData(d.Name()) {
			return nil
		}
		if !d.Type().IsRegular() {
			if d.Type()&fs.ModeSymlink == 0 {
				return nil
			}
			if info, err := os.Stat(abs); err != nil || !info.Mode().IsRegular() {
				return nil
			}
		}
		return fn(rel, abs, d)
	})
}

// notData reports whether a top-level file is documentation, not data.
func notData(name string) bool {
	base := strings.ToLower(name)
	if i := strings.IndexByte(base, '.'); i >= 0 {
		base = base[:i]
	}
	switch base {
	case "readme", "license", "licence":
		return true
	}
	return false
}

var imageExts = map[string]bool{".jpg": true, ".jpeg": true, ".png": true, ".bmp": true, ".gif": true, ".webp": true}

func isImage(name string) bool { return imageExts[strings.ToLower(path.Ext(name))] }

// inDir reports whether a directory of rel (not its file name) is named dir,
// ignoring case.
func inDir(rel, dir string) bool {
	parts := strings.Split(rel, "/")
	for _, p := range parts[:len(parts)-1] {
		if strings.EqualFold(p, dir) {
			return true
		}
	}
	return false
}

// isNamesFile reports whether name is a YOLO/Darknet class names file.
func isNamesFile(name string) bool {
	n := strings.ToLower(name)
	return n == "classes.txt" || strings.HasSuffix(n, ".names")
}

func isYAML(name string) bool {
	n := strings.ToLower(name)
	return strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")
}

// inventory is what a first walk learns: the size of the dataset and, when
// detecting, which formats its files look like.
type inventory struct {
	files, bytes int64
	found        map[Format]*evidence
	images       evidence
	other        map[string]int // extension → files of no known format
}

type evidence struct {
	files   int
	example string
}

func (e *evidence) add(rel string) {
	if e.files == 0 {
		e.example = rel
	}
	e.files++
}

func survey(ctx context.Context, dir string, detect bool) (*inventory, error) {
	inv := &inventory{found: map[Format]*evidence{}, other: map[string]int{}}
	err := walk(ctx, dir, func(rel, abs string, d fs.DirEntry) error {
		info, err := os.Stat(abs)
		if err != nil {
			return err
		}
		inv.files++
		inv.bytes += info.Size()
		if detect {
			inv.classify(rel, abs)
		}
		return nil
	})
	return inv, err
}

func (inv *inventory) found1(f Format, rel string) {
	e := inv.found[f]
	if e == nil {
		e = &evidence{}
		inv.found[f] = e
	}
	e.add(rel)
}

// classify records what format the file at rel suggests. Images are kept
// apart: they are the data only when no annotation format is present.
func (inv *inventory) classify(rel, abs string) {
	name := path.Base(rel)
	ext := strings.ToLower(path.Ext(name))
	switch {
	case imageExts[ext]:
		inv.images.add(rel)
	case ext == ".csv":
		inv.found1(CSV, rel)
	case ext == ".jsonl" || ext == ".ndjson":
		inv.found1(JSONL, rel)
	case ext == ".json" && looksLikeCOCO(abs):
		inv.found1(COCO, rel)
	case ext == ".xml" && (inDir(rel, "Annotations") || looksLikeVOC(abs)):
		inv.found1(VOC, rel)
	case ext == ".txt" && inDir(rel, "ImageSets"), isNamesFile(name), isYAML(name):
		// Side files of VOC and YOLO: not data by themselves.
	case ext == ".txt" && inDir(rel, "labels"):
		inv.found1(YOLO, rel)
	case ext == ".txt" && looksLikeImageList(abs):
		inv.found1(ImageList, rel)
	default:
		if ext == "" {
			ext = "no extension"
		}
		inv.other[ext]++
	}
}

func (inv *inventory) detect() (Format, error) {
	var formats []Format
	for _, f := range Formats {
		if inv.found[f] != nil {
			formats = append(formats, f)
		}
	}
	switch len(formats) {
	case 1:
		return formats[0], nil
	case 0:
		if inv.images.files > 0 {
			return ImageFolder, nil
		}
		if inv.files == 0 {
			return "", ErrNoData
		}
		var exts []string
		for ext, n := range inv.other {
			exts = append(exts, fmt.Sprintf("%s: %d", ext, n))
		}
		sort.Strings(exts)
		return "", fmt.Errorf("%w: %d files (%s) match none of %s; pass --format if one applies",
			ErrUnknownFormat, inv.files, strings.Join(exts, ", "), formatList())
	}
	var found []string
	for _, f := range formats {
		e := inv.found[f]
		found = append(found, fmt.Sprintf("%s (%d files, e.g. %s)", f, e.files, e.example))
	}
	return "", fmt.Errorf("%w: %s; pass --format with the one that is the data, e.g. --format %s",
		ErrMixedFormats, strings.Join(found, " and "), formats[0])
}

// looksLikeCOCO reports whether the JSON file at abs is an object with an
// "images", "annotations" or "categories" key. It reads at most 1 MiB: COCO
// files put small "info" and "licenses" first, if anything.
func looksLikeCOCO(abs string) bool {
	f, err := os.Open(abs)
	if err != nil {
		return false
	}
	defer f.Close()
	dec := json.NewDecoder(io.LimitReader(f, 1<<20))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return false
		}
		switch key {
		case "images", "annotations", "categories":
			return true
		}
		if err := skipValue(dec, nil); err != nil {
			return false
		}
	}
	return false
}

// looksLikeImageList reports whether most of the first lines of the text
// file at abs that are not blank or comments read "path label".
func looksLikeImageList(abs string) bool {
	f, err := os.Open(abs)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := newLineScanner(io.LimitReader(f, 64<<10), 4<<10)
	good, bad := 0, 0
	for good+bad < 10 && sc.Scan() {
		line := strings.TrimSpace(string(sc.Bytes()))
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if sc.TooLong() || len(fields) < 2 || !strings.Contains(fields[0], "/") && path.Ext(fields[0]) == "" {
			bad++
		} else {
			good++
		}
	}
	return good > 0 && good >= bad
}

// looksLikeVOC reports whether the XML file at abs has an <annotation> root,
// for VOC exports that keep annotations next to the images.
func looksLikeVOC(abs string) bool {
	f, err := os.Open(abs)
	if err != nil {
		return false
	}
	defer f.Close()
	dec := xml.NewDecoder(io.LimitReader(f, 64<<10))
	dec.CharsetReader = charsetReader
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if se, ok := tok.(xml.StartElement); ok {
			return se.Name.Local == "annotation"
		}
	}
}

// skipValue consumes the next JSON value token by token, so a large value is
// never held whole. tick, if set, is called after every token.
func skipValue(dec *json.Decoder, tick func()) error {
	depth := 0
	for {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		if tick != nil {
			tick()
		}
		if d, ok := t.(json.Delim); ok {
			switch d {
			case '{', '[':
				depth++
			default:
				depth--
			}
		}
		if depth == 0 {
			return nil
		}
	}
}

// splitNames maps the names layouts give splits to the canonical ones.
var splitNames = map[string]string{
	"train": "train", "training": "train",
	"val": "val", "valid": "val", "validation": "val",
	"test": "test", "testing": "test",
}

// splitOfName returns the split a directory name such as "train" or
// "val2017" names, or "".
func splitOfName(name string) string {
	return splitNames[strings.TrimRight(strings.ToLower(name), "0123456789")]
}

// splitOfStem returns the split a file name such as "train.csv" or
// "instances_val2017.json" names, or "".
func splitOfStem(name string) string {
	stem := strings.TrimSuffix(name, path.Ext(name))
	for _, tok := range strings.FieldsFunc(stem, func(r rune) bool { return r == '_' || r == '-' || r == '.' || r == ' ' }) {
		if s := splitOfName(tok); s != "" {
			return s
		}
	}
	return ""
}

// splitOfDirs returns the split the shallowest directory of rel names, or "".
func splitOfDirs(rel string) string {
	parts := strings.Split(rel, "/")
	for _, p := range parts[:len(parts)-1] {
		if s := splitOfName(p); s != "" {
			return s
		}
	}
	return ""
}

// splitOfFile is the split of a file whose name may name it (train.csv), else
// of its directories.
func splitOfFile(rel string) string {
	if s := splitOfStem(path.Base(rel)); s != "" {
		return s
	}
	return splitOfDirs(rel)
}
