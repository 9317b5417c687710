package dataset

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"path"
	"sort"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v2"
)

// maxYAML bounds data.yaml, a small config read whole.
const maxYAML = 1 << 20

// yoloNames are a YOLO dataset's class names by id, and where they come from.
type yoloNames struct {
	source string
	byID   map[int]string
	// fields is the number of fields a label line must have when data.yaml
	// sets kpt_shape (pose datasets); 0 means boxes or polygons.
	fields int
	// kptDims is the second number of kpt_shape: 3 when every keypoint has a
	// visibility flag, which is not a coordinate.
	kptDims int
}

func analyzeYOLO(ctx context.Context, dir string, _ Options, acc *accumulator) error {
	var yamls, lists []string
	labelsDir := false
	err := walk(ctx, dir, func(rel, _ string, _ fs.DirEntry) error {
		switch name := path.Base(rel); {
		case isYAML(name):
			yamls = append(yamls, rel)
		case isNamesFile(name):
			lists = append(lists, rel)
		case strings.EqualFold(path.Ext(name), ".txt") && inDir(rel, "labels"):
			labelsDir = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	byDepth := func(paths []string) {
		sort.SliceStable(paths, func(i, j int) bool { return strings.Count(paths[i], "/") < strings.Count(paths[j], "/") })
	}
	byDepth(yamls)
	byDepth(lists)
	names := findYOLONames(dir, yamls, lists, acc)
	if names == nil {
		acc.problem(".", 0, "no classes.txt, *.names or data.yaml with names: classes are counted by class id")
	} else {
		ids := make([]int, 0, len(names.byID))
		for id := range names.byID {
			ids = append(ids, id)
		}
		sort.Ints(ids)
		for _, id := range ids {
			acc.declareClass(names.byID[id])
		}
	}
	return walk(ctx, dir, func(rel, abs string, _ fs.DirEntry) error {
		name := path.Base(rel)
		if !strings.EqualFold(path.Ext(name), ".txt") || isNamesFile(name) || (labelsDir && !inDir(rel, "labels")) {
			return nil
		}
		return parseFile(acc, abs, rel, func(r io.Reader) error {
			return parseYOLO(ctx, r, rel, splitOfDirs(rel), names, acc)
		})
	})
}

// findYOLONames reads class names from the first YAML file that has them,
// else from the first classes.txt or *.names; both lists are shallowest first.
func findYOLONames(dir string, yamls, lists []string, acc *accumulator) *yoloNames {
	for _, rel := range yamls {
		var names *yoloNames
		parseFile(acc, path.Join(dir, rel), rel, func(r io.Reader) error {
			var err error
			if names, err = parseYOLOYAML(r, rel); err != nil && !errors.Is(err, errNoNames) {
				acc.problem(rel, 0, "%v", err)
			}
			return nil
		})
		if names != nil {
			return names
		}
	}
	for _, rel := range lists {
		var names *yoloNames
		parseFile(acc, path.Join(dir, rel), rel, func(r io.Reader) error {
			names = parseYOLOClasses(r, rel, acc)
			return nil
		})
		if names != nil {
			return names
		}
	}
	return nil
}

var errNoNames = errors.New("no names")

// parseYOLOYAML reads the names of a data.yaml: "names:" as a list, or as a
// map of class id to name.
func parseYOLOYAML(r io.Reader, rel string) (names *yoloNames, err error) {
	data, err := io.ReadAll(io.LimitReader(r, maxYAML+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(data) > maxYAML {
		return nil, fmt.Errorf("larger than %d KiB, not a dataset config", maxYAML>>10)
	}
	var doc struct {
		Names    any   `yaml:"names"`
		KptShape []int `yaml:"kpt_shape"`
	}
	// The YAML library parses outside input; a panic in it must not take
	// the analysis down.
	defer func() {
		if p := recover(); p != nil {
			names, err = nil, fmt.Errorf("invalid YAML: %v", p)
		}
	}()
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("invalid YAML: %w", err)
	}
	names = &yoloNames{source: rel, byID: map[int]string{}}
	switch n := doc.Names.(type) {
	case nil:
		return nil, errNoNames
	case []any:
		for id, v := range n {
			names.byID[id] = yamlScalar(v)
		}
	case map[any]any:
		for k, v := range n {
			id, ok := yamlClassID(k)
			if !ok {
				return nil, fmt.Errorf("names: key %v is not a class id (want 0, 1, …)", k)
			}
			names.byID[id] = yamlScalar(v)
		}
	default:
		return nil, fmt.Errorf("names is a %T, want a list or a map of class id to name", doc.Names)
	}
	for id, n := range names.byID {
		if n == "" {
			return nil, fmt.Errorf("names: class id %d has an empty name", id)
		}
	}
	if len(doc.KptShape) > 0 {
		if len(doc.KptShape) != 2 || doc.KptShape[0] < 1 || doc.KptShape[1] < 2 || doc.KptShape[1] > 3 || doc.KptShape[0] > 1000 {
			return nil, fmt.Errorf("kpt_shape %v: want [keypoints, 2 or 3]", doc.KptShape)
		}
		names.kptDims = doc.KptShape[1]
		names.fields = 5 + doc.KptShape[0]*doc.KptShape[1]
	}
	return names, nil
}

func yamlScalar(v any) string {
	if v == nil {
		return ""
	}
	return strings.TrimSpace(fmt.Sprint(v))
}

func yamlClassID(k any) (int, bool) {
	switch k := k.(type) {
	case int:
		return k, k >= 0
	case string:
		id, err := strconv.Atoi(k)
		return id, err == nil && id >= 0
	}
	return 0, false
}

// parseYOLOClasses reads a classes.txt or *.names file: one name per line,
// the line's position its class id.
func parseYOLOClasses(r io.Reader, rel string, acc *accumulator) *yoloNames {
	names := &yoloNames{source: rel, byID: map[int]string{}}
	sc := newLineScanner(r, 4<<10)
	blank := 0
	for sc.Scan() {
		name := strings.TrimSpace(string(sc.Bytes()))
		if name == "" || sc.TooLong() {
			if blank == 0 {
				blank = sc.Line()
			}
			continue
		}
		if blank > 0 {
			acc.problem(rel, blank, "blank line between class names: it is not a class, so class %d is %q", len(names.byID), name)
			blank = 0
		}
		names.byID[len(names.byID)] = name
	}
	if err := sc.Err(); err != nil {
		acc.problem(rel, sc.Line(), "read: %v", err)
	}
	if len(names.byID) == 0 {
		acc.problem(rel, 0, "no class names")
		return nil
	}
	return names
}

// parseYOLO counts one label file of split: a sample, and a box (or polygon,
// or pose) per line, classed by names. With nil names, classes are ids.
func parseYOLO(ctx context.Context, r io.Reader, rel, split string, names *yoloNames, acc *accumulator) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	acc.sample(split)
	sc := newLineScanner(r, 64<<10)
	for sc.Scan() {
		if sc.Line()%checkEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if sc.TooLong() {
			acc.problem(rel, sc.Line(), "line longer than 64 KiB: not counted")
			continue
		}
		fields := strings.Fields(string(sc.Bytes()))
		if len(fields) == 0 {
			continue
		}
		class, msg := yoloLine(fields, names)
		if msg != "" {
			acc.problem(rel, sc.Line(), "%s: not counted", msg)
			continue
		}
		acc.objects(split, class, 1, false)
	}
	if err := sc.Err(); err != nil {
		acc.problem(rel, sc.Line(), "read: %v", err)
	}
	return nil
}

// yoloLine checks one label line and returns its class name, or what is
// wrong with it.
func yoloLine(fields []string, names *yoloNames) (class, problem string) {
	n := len(fields)
	switch {
	case names != nil && names.fields > 0:
		if n != names.fields {
			return "", fmt.Sprintf("%d fields, want %d (class, box, keypoints of kpt_shape)", n, names.fields)
		}
	case n != 5 && (n < 7 || n%2 == 0):
		return "", fmt.Sprintf("%d fields, want 5 (class x y w h) or an odd number from 7 (class and polygon points)", n)
	}
	id, err := strconv.Atoi(fields[0])
	if err != nil || id < 0 {
		return "", fmt.Sprintf("class id %q is not a non-negative integer", fields[0])
	}
	for i, f := range fields[1:] {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return "", fmt.Sprintf("field %d: %q is not a number", i+2, f)
		}
		if names != nil && names.kptDims == 3 && i >= 4 && (i-4)%3 == 2 {
			continue // keypoint visibility: 0, 1 or 2
		}
		if v < 0 || v > 1 {
			return "", fmt.Sprintf("field %d: %s is outside [0, 1] (coordinates are normalized to the image size)", i+2, f)
		}
	}
	if names == nil {
		return strconv.Itoa(id), ""
	}
	name, ok := names.byID[id]
	if !ok {
		return "", fmt.Sprintf("class id %d has no name in %s", id, names.source)
	}
	return name, ""
}
