package dataset

import (
	"context"
	"io/fs"
	"strings"
)

// analyzeImageFolder counts images by the folder they are in: class/x.jpg, or
// split/class/x.jpg when every top-level folder holding images is named like
// a split. Deeper folders belong to their top class folder. An image with no
// class folder (x.jpg, or split/x.jpg) is an unlabeled sample.
func analyzeImageFolder(ctx context.Context, dir string, _ Options, acc *accumulator) error {
	top := map[string]bool{}
	err := walk(ctx, dir, func(rel, _ string, _ fs.DirEntry) error {
		if isImage(rel) {
			if i := strings.IndexByte(rel, '/'); i >= 0 {
				top[rel[:i]] = true
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	splitLevel := len(top) > 0
	for name := range top {
		splitLevel = splitLevel && splitOfName(name) != ""
	}
	return walk(ctx, dir, func(rel, _ string, _ fs.DirEntry) error {
		if !isImage(rel) {
			return nil
		}
		parts := strings.Split(rel, "/")
		split := ""
		if splitLevel {
			split, parts = splitOfName(parts[0]), parts[1:]
		}
		if len(parts) == 1 {
			acc.sample(split)
			return nil
		}
		acc.sample(split, parts[0])
		return nil
	})
}
