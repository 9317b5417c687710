package dataset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
)

func analyzeCOCO(ctx context.Context, dir string, _ Options, acc *accumulator) error {
	// The COCO download puts captions_* and person_keypoints_* files next to
	// instances_*, over the same images: when instances files are there, they
	// alone are the dataset, or every image would be counted three times.
	var instances bool
	err := walk(ctx, dir, func(rel, _ string, _ fs.DirEntry) error {
		if isCOCOFile(rel) && strings.HasPrefix(strings.ToLower(path.Base(rel)), "instances_") {
			instances = true
			return fs.SkipAll
		}
		return nil
	})
	if err != nil {
		return err
	}
	return walk(ctx, dir, func(rel, abs string, _ fs.DirEntry) error {
		if !isCOCOFile(rel) || instances && !strings.HasPrefix(strings.ToLower(path.Base(rel)), "instances_") {
			return nil
		}
		if !looksLikeCOCO(abs) {
			return nil
		}
		return parseFile(acc, abs, rel, func(r io.Reader) error {
			return parseCOCO(ctx, r, rel, splitOfFile(rel), acc)
		})
	})
}

func isCOCOFile(rel string) bool { return strings.EqualFold(path.Ext(rel), ".json") }

type cocoImage struct {
	ID *int64 `json:"id"`
}

type cocoAnnotation struct {
	ID         *int64 `json:"id"`
	ImageID    *int64 `json:"image_id"`
	CategoryID *int64 `json:"category_id"`
}

type cocoCategory struct {
	ID   *int64 `json:"id"`
	Name string `json:"name"`
}

// cocoRef counts the annotations that refer to one id, and locates the first.
type cocoRef struct {
	line  int
	annID string
	n     int64
}

func (r *cocoRef) add(line int, annID string) {
	if r.n == 0 {
		r.line, r.annID = line, annID
	}
	r.n++
}

// cocoPending are the annotations of an image id not seen yet.
type cocoPending struct {
	cocoRef
	byCategory map[int64]int64
}

// cocoFile holds what one COCO file needs kept while it streams: ids and
// counts, never the annotations. Annotations may come before the images and
// categories they refer to, so references are resolved at the end.
type cocoFile struct {
	rel, split string
	acc        *accumulator
	dec        *json.Decoder
	lines      *lineTracker
	images     map[int64]struct{}
	categories map[int64]string
	catLine    map[int64]int
	byCategory map[int64]*cocoRef     // annotations per category id
	pending    map[int64]*cocoPending // annotations per image id not seen yet
}

// parseCOCO counts one COCO instances file of split: its images are the
// samples, its annotations the objects, classed by category name.
func parseCOCO(ctx context.Context, r io.Reader, rel, split string, acc *accumulator) error {
	lines := &lineTracker{r: r}
	c := &cocoFile{
		rel: rel, split: split, acc: acc, dec: json.NewDecoder(lines), lines: lines,
		images:     map[int64]struct{}{},
		categories: map[int64]string{},
		catLine:    map[int64]int{},
		byCategory: map[int64]*cocoRef{},
		pending:    map[int64]*cocoPending{},
	}
	c.dec.UseNumber() // numbers in skipped values need no conversion to float
	if err := c.parse(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.syntaxProblem(err)
		return nil // a file cut short is not counted: its counts would be wrong
	}
	c.commit()
	return nil
}

func (c *cocoFile) line() int { return c.lines.lineAt(c.dec.InputOffset()) }

func (c *cocoFile) syntaxProblem(err error) {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		c.acc.problem(c.rel, c.lines.lineAt(se.Offset), "malformed JSON: %v: file not counted", se)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		c.acc.problem(c.rel, c.lines.lineAt(c.lines.read), "JSON ends early: file not counted")
	default:
		c.acc.problem(c.rel, c.line(), "%v: file not counted", err)
	}
}

var errNotCOCO = errors.New("not a COCO file")

func (c *cocoFile) parse(ctx context.Context) error {
	if t, err := c.dec.Token(); err != nil {
		return err
	} else if t != json.Delim('{') {
		return fmt.Errorf("%w: top level is not a JSON object", errNotCOCO)
	}
	var seen []string
	for c.dec.More() {
		t, err := c.dec.Token()
		if err != nil {
			return err
		}
		key, _ := t.(string)
		switch key {
		case "images", "annotations", "categories":
			seen = append(seen, key)
			if err := c.array(ctx, key); err != nil {
				return err
			}
		default:
			if err := skipValue(c.dec, func() { c.line() }); err != nil {
				return err
			}
		}
	}
	if _, err := c.dec.Token(); err != nil { // the closing brace
		return err
	}
	if t, err := c.dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return err
		}
		return fmt.Errorf("unexpected %v after the top-level object", t)
	}
	for _, key := range []string{"images", "categories"} {
		if !contains(seen, key) {
			c.acc.problem(c.rel, 0, "no %q array", key)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// array streams the elements of the "images", "annotations" or "categories"
// array, decoding one element at a time.
func (c *cocoFile) array(ctx context.Context, key string) error {
	t, err := c.dec.Token()
	if err != nil {
		return err
	}
	if t != json.Delim('[') {
		c.acc.problem(c.rel, c.line(), "%q is not an array: ignored", key)
		if d, ok := t.(json.Delim); ok && d == '{' {
			return skipRest(c.dec, func() { c.line() })
		}
		return nil
	}
	for n := 0; c.dec.More(); n++ {
		if n%checkEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		var raw json.RawMessage
		if err := c.dec.Decode(&raw); err != nil {
			return err
		}
		line := c.lines.lineAt(c.dec.InputOffset() - int64(len(raw)))
		switch key {
		case "images":
			c.image(raw, line)
		case "annotations":
			c.annotation(raw, line)
		case "categories":
			c.category(raw, line)
		}
	}
	_, err = c.dec.Token() // ']'
	return err
}

// skipRest consumes the rest of a value whose opening delimiter was read.
func skipRest(dec *json.Decoder, tick func()) error {
	for depth := 1; depth > 0; {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		tick()
		if d, ok := t.(json.Delim); ok {
			if d == '{' || d == '[' {
				depth++
			} else {
				depth--
			}
		}
	}
	return nil
}

// decodeElement decodes raw into v, wording a failure for a person.
func decodeElement(raw json.RawMessage, v any) error {
	err := json.Unmarshal(raw, v)
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("field %q is a JSON %s, want %s", te.Field, te.Value, te.Type)
	}
	return err
}

func (c *cocoFile) image(raw json.RawMessage, line int) {
	var im cocoImage
	if err := decodeElement(raw, &im); err != nil {
		c.acc.problem(c.rel, line, "image: %v: not counted", err)
		return
	}
	if im.ID == nil {
		c.acc.problem(c.rel, line, "image without \"id\": not counted")
		return
	}
	if _, dup := c.images[*im.ID]; dup {
		c.acc.problem(c.rel, line, "image id %d appears twice: counted once", *im.ID)
		return
	}
	c.images[*im.ID] = struct{}{}
}

func (c *cocoFile) annotation(raw json.RawMessage, line int) {
	var an cocoAnnotation
	if err := decodeElement(raw, &an); err != nil {
		c.acc.problem(c.rel, line, "annotation: %v: not counted", err)
		return
	}
	id := "without id"
	if an.ID != nil {
		id = fmt.Sprintf("id %d", *an.ID)
	}
	switch {
	case an.ImageID == nil:
		c.acc.problem(c.rel, line, "annotation %s has no \"image_id\": not counted", id)
		return
	case an.CategoryID == nil:
		c.acc.problem(c.rel, line, "annotation %s has no \"category_id\": not counted", id)
		return
	}
	cat := c.byCategory[*an.CategoryID]
	if cat == nil {
		cat = &cocoRef{}
		c.byCategory[*an.CategoryID] = cat
	}
	cat.add(line, id)
	if _, ok := c.images[*an.ImageID]; !ok {
		// Resolved in commit: the image may come later in the file.
		p := c.pending[*an.ImageID]
		if p == nil {
			p = &cocoPending{byCategory: map[int64]int64{}}
			c.pending[*an.ImageID] = p
		}
		p.add(line, id)
		p.byCategory[*an.CategoryID]++
	}
}

func (c *cocoFile) category(raw json.RawMessage, line int) {
	var cat cocoCategory
	if err := decodeElement(raw, &cat); err != nil {
		c.acc.problem(c.rel, line, "category: %v: ignored", err)
		return
	}
	switch {
	case cat.ID == nil:
		c.acc.problem(c.rel, line, "category %q without \"id\": ignored", cat.Name)
		return
	case cat.Name == "":
		c.acc.problem(c.rel, line, "category id %d without \"name\": ignored", *cat.ID)
		return
	}
	if prev, dup := c.categories[*cat.ID]; dup {
		c.acc.problem(c.rel, line, "category id %d appears twice (%q at line %d, %q here): the first is used",
			*cat.ID, prev, c.catLine[*cat.ID], cat.Name)
		return
	}
	c.categories[*cat.ID] = cat.Name
	c.catLine[*cat.ID] = line
}

// commit adds the file's counts once it has been read whole, and reports
// references to images and categories the file does not have.
func (c *cocoFile) commit() {
	unknownImages := map[int64]*cocoRef{}
	for imgID, p := range c.pending {
		if _, ok := c.images[imgID]; ok {
			continue
		}
		unknownImages[imgID] = &p.cocoRef
		for catID, n := range p.byCategory {
			c.byCategory[catID].n -= n
		}
	}
	c.reportUnknown("image_id", unknownImages)

	for range c.images {
		c.acc.sample(c.split)
	}
	ids := make([]int64, 0, len(c.categories))
	for id := range c.categories {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		c.acc.declareClass(c.categories[id])
		if ref := c.byCategory[id]; ref != nil && ref.n > 0 {
			c.acc.objects(c.split, c.categories[id], ref.n, false)
		}
	}
	unknownCats := map[int64]*cocoRef{}
	for id, ref := range c.byCategory {
		if _, ok := c.categories[id]; !ok && ref.n > 0 {
			unknownCats[id] = ref
		}
	}
	c.reportUnknown("category_id", unknownCats)
}

func (c *cocoFile) reportUnknown(field string, refs map[int64]*cocoRef) {
	ids := make([]int64, 0, len(refs))
	for id := range refs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		if a, b := refs[ids[i]].line, refs[ids[j]].line; a != b {
			return a < b
		}
		return ids[i] < ids[j]
	})
	for _, id := range ids {
		ref := refs[id]
		who := "annotation " + ref.annID + " refers"
		if ref.n > 1 {
			who = fmt.Sprintf("annotation %s and %d more refer", ref.annID, ref.n-1)
		}
		c.acc.problem(c.rel, ref.line, "%s to %s %d, which is not in the file: not counted", who, field, id)
	}
}
