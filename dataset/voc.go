package dataset

import (
	"bufio"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"unicode/utf8"
)

const (
	// maxXML bounds one VOC annotation file (they are a few KiB): xml.Decoder
	// holds a whole text node, so an unbounded file could fill memory.
	maxXML = 16 << 20
	// maxXMLDepth bounds element nesting, which VOC keeps at four.
	maxXMLDepth = 64
)

var errTooLarge = errors.New("file too large")

// vocSplitFiles are the ImageSets/Main lists that name splits; trainval.txt is
// their union and class_split.txt lists repeat them.
var vocSplitFiles = []string{"train", "val", "test"}

func analyzeVOC(ctx context.Context, dir string, _ Options, acc *accumulator) error {
	underAnnotations := false
	err := walk(ctx, dir, func(rel, _ string, _ fs.DirEntry) error {
		if strings.EqualFold(path.Ext(rel), ".xml") && inDir(rel, "Annotations") {
			underAnnotations = true
			return fs.SkipAll
		}
		return nil
	})
	if err != nil {
		return err
	}
	roots := map[string]*vocImageSets{} // VOC root (parent of Annotations) → its splits
	var order []string
	err = walk(ctx, dir, func(rel, abs string, _ fs.DirEntry) error {
		if !strings.EqualFold(path.Ext(rel), ".xml") {
			return nil
		}
		root, ok := vocRoot(rel)
		if underAnnotations && !ok {
			return nil
		}
		sets := roots[root]
		if sets == nil {
			sets = readVOCImageSets(dir, root, acc)
			roots[root] = sets
			order = append(order, root)
		}
		split, listed := sets.lookup(strings.TrimSuffix(path.Base(rel), path.Ext(rel)))
		if !listed {
			split = splitOfDirs(rel)
		}
		return parseFile(acc, abs, rel, func(r io.Reader) error {
			return parseVOC(ctx, r, rel, split, acc)
		})
	})
	if err != nil {
		return err
	}
	for _, root := range order {
		roots[root].reportUnseen(acc)
	}
	return nil
}

// vocRoot returns the directory holding the Annotations directory of rel.
func vocRoot(rel string) (string, bool) {
	parts := strings.Split(rel, "/")
	for i := len(parts) - 2; i >= 0; i-- {
		if strings.EqualFold(parts[i], "Annotations") {
			return strings.Join(parts[:i], "/"), true
		}
	}
	return path.Dir(rel), false
}

// vocImageSets maps image ids to the split list naming them.
type vocImageSets struct {
	ids map[string]*vocListed
}

type vocListed struct {
	split, list string
	line        int
	seen        bool
}

func (s *vocImageSets) lookup(id string) (string, bool) {
	e := s.ids[id]
	if e == nil {
		return "", false
	}
	e.seen = true
	return e.split, true
}

// reportUnseen reports ids a split list names but no annotation file has.
func (s *vocImageSets) reportUnseen(acc *accumulator) {
	var missing []string
	for id, e := range s.ids {
		if !e.seen {
			missing = append(missing, id)
		}
	}
	sort.Slice(missing, func(i, j int) bool {
		a, b := s.ids[missing[i]], s.ids[missing[j]]
		if a.list != b.list {
			return a.list < b.list
		}
		return a.line < b.line
	})
	for _, id := range missing {
		e := s.ids[id]
		acc.problem(e.list, e.line, "image %q is listed but has no annotation file Annotations/%s.xml", id, id)
	}
}

func readVOCImageSets(dir, root string, acc *accumulator) *vocImageSets {
	sets := &vocImageSets{ids: map[string]*vocListed{}}
	for _, split := range vocSplitFiles {
		list := path.Join(root, "ImageSets/Main", split+".txt")
		f, err := os.Open(path.Join(dir, list))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			acc.problem(list, 0, "cannot open: %v", err)
			continue
		}
		sc := newLineScanner(f, 4<<10)
		for sc.Scan() {
			fields := strings.Fields(string(sc.Bytes()))
			if len(fields) == 0 {
				continue
			}
			id := fields[0]
			if prev := sets.ids[id]; prev != nil {
				acc.problem(list, sc.Line(), "image %q is also listed in %s:%d: counted in %s only", id, prev.list, prev.line, prev.split)
				continue
			}
			sets.ids[id] = &vocListed{split: split, list: list, line: sc.Line()}
		}
		if err := sc.Err(); err != nil {
			acc.problem(list, sc.Line(), "read: %v", err)
		}
		f.Close()
	}
	return sets
}

// parseVOC counts one Pascal VOC annotation file of split: one sample, and
// its objects by <name>. A malformed file is reported and not counted at all.
func parseVOC(ctx context.Context, r io.Reader, rel, split string, acc *accumulator) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	type object struct {
		name      string
		difficult bool
		line      int
	}
	var (
		objects  []object
		cur      *object
		stack    []string
		text     strings.Builder
		rootSeen bool
	)
	dec := xml.NewDecoder(&limitedReader{r: bufio.NewReader(r), n: maxXML})
	dec.CharsetReader = charsetReader
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			line, _ := dec.InputPos()
			var se *xml.SyntaxError
			switch {
			case errors.As(err, &se):
				acc.problem(rel, se.Line, "malformed XML: %s: annotation not counted", se.Msg)
			case errors.Is(err, errTooLarge):
				acc.problem(rel, 0, "larger than %d MiB, not a VOC annotation: not counted", maxXML>>20)
			default:
				acc.problem(rel, line, "malformed XML: %v: annotation not counted", err)
			}
			return nil
		}
		switch t := tok.(type) {
		case xml.StartElement:
			line, _ := dec.InputPos()
			if len(stack) == 0 {
				if rootSeen {
					acc.problem(rel, line, "second root element <%s>: annotation not counted", t.Name.Local)
					return nil
				}
				if t.Name.Local != "annotation" {
					acc.problem(rel, line, "root element is <%s>, want <annotation>: not counted", t.Name.Local)
					return nil
				}
				rootSeen = true
			}
			if len(stack) == maxXMLDepth {
				acc.problem(rel, line, "elements nested deeper than %d: annotation not counted", maxXMLDepth)
				return nil
			}
			stack = append(stack, t.Name.Local)
			if len(stack) == 2 && t.Name.Local == "object" {
				cur = &object{line: line}
			}
			text.Reset()
		case xml.CharData:
			if cur != nil && len(stack) == 3 {
				text.Write(t)
			}
		case xml.EndElement:
			if cur != nil && len(stack) == 3 {
				switch stack[2] {
				case "name":
					cur.name = strings.TrimSpace(text.String())
				case "difficult":
					v := strings.TrimSpace(text.String())
					cur.difficult = v == "1" || strings.EqualFold(v, "true")
				}
			}
			if cur != nil && len(stack) == 2 {
				objects = append(objects, *cur)
				cur = nil
			}
			stack = stack[:len(stack)-1]
		}
	}
	if !rootSeen {
		acc.problem(rel, 0, "no <annotation> element: not counted")
		return nil
	}
	acc.sample(split)
	for _, o := range objects {
		if o.name == "" {
			acc.problem(rel, o.line, "<object> without <name>: object not counted")
			continue
		}
		acc.objects(split, o.name, 1, o.difficult)
	}
	return nil
}

// limitedReader fails with errTooLarge past n bytes, where io.LimitReader
// would end quietly and turn a huge file into a truncated one.
type limitedReader struct {
	r io.Reader
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// charsetReader lets annotations declare the single-byte encodings that
// annotation tools write besides UTF-8.
func charsetReader(charset string, input io.Reader) (io.Reader, error) {
	switch strings.ToLower(charset) {
	case "utf-8", "utf8", "us-ascii", "ascii":
		return input, nil
	case "iso-8859-1", "latin1", "latin-1":
		return &latin1Reader{r: input}, nil
	}
	return nil, fmt.Errorf("unsupported encoding %q (want UTF-8 or ISO-8859-1)", charset)
}

type latin1Reader struct {
	r   io.Reader
	buf []byte
}

func (l *latin1Reader) Read(p []byte) (int, error) {
	if len(p) < utf8.UTFMax {
		return 0, io.ErrShortBuffer
	}
	n := len(p) / 2
	if cap(l.buf) < n {
		l.buf = make([]byte, n)
	}
	m, err := l.r.Read(l.buf[:n])
	out := p[:0]
	for _, b := range l.buf[:m] {
		out = utf8.AppendRune(out, rune(b))
	}
	return len(out), err
}
