package dataset

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

func analyzeImageList(ctx context.Context, dir string, _ Options, acc *accumulator) error {
	return walk(ctx, dir, func(rel, abs string, _ fs.DirEntry) error {
		name := path.Base(rel)
		if !strings.EqualFold(path.Ext(name), ".txt") || isNamesFile(name) {
			return nil
		}
		if !looksLikeImageList(abs) {
			acc.problem(rel, 0, "not a list of \"path label\" lines: skipped")
			return nil
		}
		listDir := filepath.Dir(abs)
		exists := func(ref string) bool {
			ref = filepath.FromSlash(ref)
			if filepath.IsAbs(ref) {
				return fileExists(ref)
			}
			return fileExists(filepath.Join(listDir, ref)) || fileExists(filepath.Join(dir, ref))
		}
		return parseFile(acc, abs, rel, func(r io.Reader) error {
			return parseImageList(ctx, r, rel, splitOfFile(rel), exists, acc)
		})
	})
}

func fileExists(p string) bool {
	info, err := os.Stat(p)
	return err == nil && !info.IsDir()
}

// parseImageList counts the "path label" lines of one list file of split.
// The label is the last field, so a path may hold spaces. exists, if not nil,
// tells whether a referenced file is there.
func parseImageList(ctx context.Context, r io.Reader, rel, split string, exists func(ref string) bool, acc *accumulator) error {
	sc := newLineScanner(r, maxLine)
	for sc.Scan() {
		if sc.Line()%checkEvery == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if sc.TooLong() {
			acc.problem(rel, sc.Line(), "line longer than %d KiB: not counted", maxLine>>10)
			continue
		}
		line := strings.TrimSpace(string(sc.Bytes()))
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cut := strings.LastIndexAny(line, " \t")
		if cut < 0 {
			acc.problem(rel, sc.Line(), "%q has no label (want \"path label\"): not counted", line)
			continue
		}
		ref, label := strings.TrimSpace(line[:cut]), line[cut+1:]
		if exists != nil && !exists(ref) {
			acc.problem(rel, sc.Line(), "file %q not found next to the list or under the dataset root (sample counted)", ref)
		}
		acc.sample(split, label)
	}
	if err := sc.Err(); err != nil {
		acc.problem(rel, sc.Line(), "read: %v", err)
	}
	return nil
}
